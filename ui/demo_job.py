"""The home page's demo launcher: the demo is queued as an ordinary job (``engine.jobs.queue``), so it shows on the Jobs
page with its progress, log and cancel button like any other run.

When no worker is alive, the launcher starts one for it: a ``python -m engine worker --once`` child of the app
(:func:`engine.jobs.workers.spawn_once_worker`) that runs the queue empty and exits, and is stopped (its job put
back in the queue) when the app exits. Its log is appended to ``<store dir>/worker.log``.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from engine.jobs import queue as jobs
from engine.jobs import workers
from engine.spec.presets import demo_spec, is_demo

_lock = threading.Lock()
_spawned: list[subprocess.Popen] = []  # the workers this app process started (kept to reap them)


def worker_log(store_path: Path) -> Path:
    return Path(store_path).parent / "worker.log"


def own_worker_running() -> bool:
    """Whether a worker this process started is still running (reaps the ones that finished)."""
    with _lock:
        _spawned[:] = [p for p in _spawned if p.poll() is None]
        return bool(_spawned)


def ensure_worker(jobs_dir: Path, store_path: Path) -> bool:
    """Start a ``--once`` worker unless one is alive (registered, or started by us and still starting up).
    Returns True when it started one."""
    with _lock:
        _spawned[:] = [p for p in _spawned if p.poll() is None]
        if _spawned or workers.alive(jobs_dir):
            return False
        _spawned.append(workers.spawn_once_worker(jobs_dir, store_path, worker_log(store_path)))
        return True


def launch(jobs_dir: Path, store_path: Path, model: str, task: str, stages: tuple[str, ...],
           submitted_by: str | None = None) -> str:
    """Queue the demo run of ``task`` on ``model`` with the analyses ``stages``; make sure a worker will run it.
    Returns the job id."""
    job_id = jobs.submit(jobs_dir, demo_spec(model, task, stages=stages), submitted_by=submitted_by)
    ensure_worker(jobs_dir, store_path)
    return job_id


def latest(jobs_dir: Path) -> dict | None:
    """The state of the newest demo job (any status), or None."""
    for job_id in reversed(jobs.job_ids(jobs_dir)):
        st = jobs.state(jobs_dir, job_id)
        if is_demo(st.get("run", "")):
            return st
    return None
