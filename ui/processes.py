"""Background processes the app starts (the demo, token jobs): is the one recorded in a pid file still running?"""

from __future__ import annotations

import os
from pathlib import Path


def running_pid(pid_file: Path) -> int | None:
    """The pid written in ``pid_file`` if that process still runs, else None (a finished child of ours is reaped)."""
    try:
        pid = int(Path(pid_file).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    try:  # a finished child stays a zombie until reaped; reap it so it counts as done
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return None
    except ChildProcessError:
        pass
    return pid
