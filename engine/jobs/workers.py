"""Who is running jobs: every worker keeps a heartbeat file, so the app can show the live workers.

One file per worker in the jobs folder (the folder app and workers share)::

    jobs/.workers/<host>-<pid>.json   {"host", "pid", "device", "started", "heartbeat", "job", "jobs_done"}

The folder's name starts with a dot, so :func:`engine.jobs.queue.job_ids` never takes it for a job. A worker writes its
file when it starts (:func:`register`), refreshes ``heartbeat`` every :data:`HEARTBEAT_S` from a background
thread (so the file stays fresh while a long job runs), records the job it is running (``job``, None when idle)
and removes the file when it stops. A worker killed with SIGKILL, or on a machine that went away, leaves its file
behind: a file whose heartbeat is older than :data:`STALE_S`, or whose pid no longer exists on this host, is a
dead worker's; :func:`alive` leaves it out and removes it.

:func:`spawn_once_worker` starts a ``python -m engine worker --once`` child that cannot outlive the process that
started it (the app's demo launcher uses it when no worker is alive).
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import datetime as _dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from engine.paths import REPO_ROOT

HEARTBEAT_S = 2.0
STALE_S = 20.0  # ten missed heartbeats: the worker is gone (its jobs are re-queued by engine.jobs.queue after 60 s)
FOLDER = ".workers"


def registry_dir(jobs_dir: str | os.PathLike) -> Path:
    return Path(jobs_dir) / FOLDER


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


class Registration:
    """A live worker's heartbeat file; :meth:`set_job` records what it runs, :meth:`close` removes the file."""

    def __init__(self, jobs_dir: str | os.PathLike, device: str | None = None, heartbeat_s: float = HEARTBEAT_S):
        self.host, self.pid = socket.gethostname(), os.getpid()
        folder = registry_dir(jobs_dir)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{self.host}-{self.pid}.json"
        started = _now().isoformat(timespec="seconds")
        self.info = {"host": self.host, "pid": self.pid, "device": device or "not reported", "started": started,
                     "heartbeat": started, "job": None, "jobs_done": 0}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._write()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True,
                                        name="worker-heartbeat")
        self._thread.start()

    def _write(self) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            self.info["heartbeat"] = _now().isoformat(timespec="seconds")
            try:
                _write_json(self.path, self.info)
            except OSError:  # a full or vanished disk must not kill the worker; the page will call it dead
                pass

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            self._write()

    def set_job(self, job_id: str | None) -> None:
        """Record the job being run (None: idle again, one more job done)."""
        if job_id is None and self.info["job"] is not None:
            self.info["jobs_done"] += 1
        self.info["job"] = job_id
        self._write()

    def close(self) -> None:
        with self._lock:
            self._stop.set()
        self._thread.join(timeout=5)
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> "Registration":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def register(jobs_dir: str | os.PathLike, device: str | None = None,
             heartbeat_s: float = HEARTBEAT_S) -> Registration:
    """Announce this process as a worker on ``jobs_dir`` (``device``: its description, e.g. ``engine.model.base.detect_device()``)."""
    return Registration(jobs_dir, device, heartbeat_s)


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_dead(info: dict, now: _dt.datetime | None = None, host: str | None = None) -> bool:
    """A worker is dead when its heartbeat is older than :data:`STALE_S` (or unreadable), or when it ran on this
    host and its pid is gone (it was killed before its file went stale). Heartbeats from another host's clock
    are trusted as they are."""
    now = now or _now()
    try:
        beat = _dt.datetime.fromisoformat(info["heartbeat"])
        age = (now - beat).total_seconds()
    except (KeyError, TypeError, ValueError):
        return True
    if age > STALE_S:
        return True
    if info.get("host") == (host or socket.gethostname()):
        try:
            return not _pid_exists(int(info["pid"]))
        except (KeyError, TypeError, ValueError):
            return True
    return False


def alive(jobs_dir: str | os.PathLike) -> list[dict]:
    """The live workers of ``jobs_dir``, oldest first; the files of dead workers are removed on the way."""
    folder = registry_dir(jobs_dir)
    if not folder.is_dir():
        return []
    out, now, host = [], _now(), socket.gethostname()
    for path in folder.glob("*.json"):
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:  # the worker stopped between the listing and the read
            continue
        except (OSError, json.JSONDecodeError):
            info = {}
        if not isinstance(info, dict) or is_dead(info, now, host):
            try:
                path.unlink(missing_ok=True)
            except OSError:  # read-only for this process (another user's worker): just leave it out
                pass
            continue
        out.append(info)
    return sorted(out, key=lambda i: (str(i.get("started")), str(i.get("host")), int(i.get("pid") or 0)))


# ---------------------------------------------------------------------------------------------- a child worker

# PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process. Streamlit runs every
# script run in a short-lived thread, so a child started from there would be signalled as soon as that run ends.
# Children are therefore started from this executor's one thread, which lives until the interpreter exits.
_SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="worker-spawner")


def die_with_parent(sig: int = signal.SIGTERM, new_session: bool = True):
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when the thread that started it ends
    (Linux PR_SET_PDEATHSIG; elsewhere nothing happens), and with ``new_session`` its own session and process
    group (a terminal's Ctrl-C then reaches the parent only, which stops the child its own way)."""
    parent_pid = os.getpid()

    def setup() -> None:  # pragma: no cover - runs in the child between fork and exec
        if new_session:
            os.setsid()
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG = 1
        except OSError:
            return
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)
    return setup


def spawn_once_worker(jobs_dir: str | os.PathLike, store_path: str | os.PathLike,
                      log_path: str | os.PathLike) -> subprocess.Popen:
    """Start ``python -m engine worker --once`` on ``jobs_dir``: it runs the queued jobs, then exits. It gets
    SIGTERM when this process ends (even by SIGKILL), and a worker stops on SIGTERM by ending its job's run and
    putting the job back in the queue, so nothing runs on after the app that started it. Output goes to
    ``log_path`` (appended)."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "engine", "worker", "--once", "--jobs", str(jobs_dir), "--store", str(store_path)]

    def start() -> subprocess.Popen:
        with open(log_path, "ab") as log:
            log.write(f"[{_now().isoformat(timespec='seconds')}] {' '.join(cmd[1:])}\n".encode())
            log.flush()
            return subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=die_with_parent())

    return _SPAWNER.submit(start).result()
