"""Launch ``python -m engine tokens`` from the app as a separate process and follow it (no torch in the app).

One job at a time per run: ``<tokens dir>/<run>/job.pid``, ``job.json`` (what it computes) and ``job.log`` survive
page reloads. The job writes only result files (:mod:`engine.scoring.token_files`); the page reads them when it ends.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from engine.jobs.queue import tail_text
from engine.paths import REPO_ROOT
from engine.scoring.token_files import run_dir
from ui import processes


def _files(tokens_dir: Path, run: str) -> tuple[Path, Path, Path]:
    d = run_dir(tokens_dir, run)
    return d / "job.pid", d / "job.json", d / "job.log"


def running(tokens_dir: Path, run: str) -> dict | None:
    """The request of this run's token job while it runs (``checkpoint``, ``train_ids``), else None."""
    pid_file, req_file, _ = _files(tokens_dir, run)
    if processes.running_pid(pid_file) is None:
        return None
    try:
        return json.loads(req_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def launch(store_path: Path, tokens_dir: Path, run: str, checkpoint: int, train_ids: list[int]) -> int:
    """Start the job in the background; returns its pid."""
    pid_file, req_file, log_file = _files(tokens_dir, run)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    req_file.write_text(json.dumps({"checkpoint": int(checkpoint), "train_ids": [int(i) for i in train_ids]}),
                        encoding="utf-8")
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "tokens", "--run", run, "--checkpoint", str(int(checkpoint)),
             "--train", ",".join(str(int(i)) for i in train_ids), "--store", str(store_path),
             "--tokens-dir", str(tokens_dir)],
            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    pid_file.write_text(str(proc.pid))
    return proc.pid


def last_line(tokens_dir: Path, run: str, max_bytes: int = 20000) -> str:
    """The latest line of the job's log (its progress, or its ``error: ...``)."""
    _, _, log_file = _files(tokens_dir, run)
    parts = [p.strip() for p in re.split(r"[\r\n]+", tail_text(log_file, max_bytes)) if p.strip()]
    return parts[-1] if parts else ""
