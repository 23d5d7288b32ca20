"""Launch ``python -m engine demo`` from the app as a separate process and follow its log.

The process writes only a run folder (``--no-ingest``); the app, which owns the database, ingests it on the
next refresh. ``<store dir>/demo.pid`` and ``demo.log`` survive page reloads and app restarts.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from engine.jobs import tail_text
from ui import processes

REPO = Path(__file__).resolve().parents[1]


def _files(store_path: Path) -> tuple[Path, Path]:
    return store_path.parent / "demo.pid", store_path.parent / "demo.log"


def running_pid(store_path: Path) -> int | None:
    """The pid of a demo still running, else None."""
    return processes.running_pid(_files(store_path)[0])


def launch(store_path: Path, model: str, analyses: str = "all") -> int:
    """Start the demo in the background (``analyses``: "all", "none" or a comma list); returns its pid."""
    pid_file, log_file = _files(store_path)
    store_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "demo", "--model", model, "--no-ingest", "--store", str(store_path),
             "--analyses", analyses],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    pid_file.write_text(str(proc.pid))
    return proc.pid


def last_status(store_path: Path, max_bytes: int = 20000) -> str:
    """The latest progress line of the demo log (tqdm redraws with carriage returns)."""
    _, log_file = _files(store_path)
    text = tail_text(log_file, max_bytes)
    parts = [p.strip() for p in re.split(r"[\r\n]+", text) if p.strip()]
    return parts[-1] if parts else ""
