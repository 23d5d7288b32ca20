"""A file-based FIFO job queue: the app submits run specs, workers claim and run them.

Workers never open the database (the app is its single writer): a job's run goes into a run folder, which the
app ingests when it next looks. Everything lives under the jobs folder (``$INFLUENCE_JOBS``, default
``<store dir>/jobs``), one folder per job, so jobs survive page reloads, app restarts and worker crashes::

    jobs/<job_id>/spec.json    the validated run spec (JSON)
    jobs/<job_id>/state.json   status, times, worker, heartbeat, message (replaced atomically)
    jobs/<job_id>/log.txt      the run's stdout/stderr
    jobs/<job_id>/claim        created with O_EXCL by the worker (or canceller) that takes the job
    jobs/<job_id>/cancel       asks the worker running the job to stop

Job ids sort by submission time, which gives the FIFO order. A job folder appears only complete (written under
a hidden name, then renamed). Status: queued → running → done | failed | cancelled; a job whose state file is
damaged (truncated, not UTF-8, not a JSON object, unreadable) reads as ``broken``, naming its folder, and is
never claimed. A failed job's message says why (:func:`failure_message`). A running job whose
heartbeat is older than :data:`STALE_S` (its worker was killed) is re-queued by the next worker that starts or
polls (:func:`recover_stale`), or by hand (:func:`requeue`). The run itself is a child process
(``python -m engine run``) in its own process group that dies with its worker (PR_SET_PDEATHSIG), and the
pipeline only renames its run folder into place when complete, so a killed or cancelled job never leaves a
partial run that the app could ingest.
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from engine.errors import InputError
from engine.jobs import workers
from engine.paths import REPO_ROOT, RUNS_ENV
from engine.spec.run_spec import RunSpec

STALE_S = 60.0  # a running job whose heartbeat is older than this has lost its worker
HEARTBEAT_S = 2.0
STATUSES = ("queued", "running", "done", "failed", "cancelled")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict:
    """The JSON object in ``path``; ``{}`` when it is missing or cannot be read as one."""
    return _load_json(path)[0]


def _load_json(path: Path) -> tuple[dict, str | None]:
    """``(object, None)``, or ``({}, why)`` when ``path`` is missing, unreadable, truncated, not UTF-8 or not a
    JSON object (a state file is replaced atomically, so any of these is damage, not a write in progress)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, "missing"
    except (OSError, ValueError) as e:  # ValueError: JSONDecodeError (truncated), UnicodeDecodeError
        return {}, f"unreadable ({type(e).__name__}: {e})"
    if not isinstance(data, dict):
        return {}, f"not a JSON object (a {type(data).__name__})"
    return data, None


def _check_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not job_id or job_id.startswith(".") or "/" in job_id or ".." in job_id:
        raise InputError(f"not a job id: {job_id!r}")
    return job_id


# ---------------------------------------------------------------------------------------------- the queue


def submit(jobs_dir: str | os.PathLike, spec: RunSpec, submitted_by: str | None = None) -> str:
    """Queue ``spec`` (already validated); return the job id."""
    jobs_dir = Path(jobs_dir)
    jobs_dir.mkdir(parents=True, exist_ok=True)
    job_id = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f") + "-" + secrets.token_hex(3)
    tmp = jobs_dir / f".{job_id}.tmp"
    tmp.mkdir()
    try:
        (tmp / "spec.json").write_text(json.dumps(spec.to_dict(), indent=1), encoding="utf-8")
        _write_json(tmp / "state.json", {"status": "queued", "run": spec.run_name, "created": _now(),
                                          "submitted_by": submitted_by, "message": "waiting for a worker"})
        os.rename(tmp, jobs_dir / job_id)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return job_id


def job_ids(jobs_dir: str | os.PathLike) -> list[str]:
    """Every complete job folder's id, oldest first."""
    d = Path(jobs_dir)
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def state(jobs_dir: str | os.PathLike, job_id: str) -> dict:
    """The job's state, with ``id`` and ``stale`` (running without a live worker). A state file that is
    missing or damaged gives status ``broken`` and a message naming the job folder (no worker claims it)."""
    folder = Path(jobs_dir) / _check_id(job_id)
    st, problem = _load_json(folder / "state.json")
    if problem:
        st = {"status": "broken", "message": f"job folder {folder.name}: state.json is {problem}"}
    st["id"] = job_id
    st["stale"] = is_stale(st)
    return st


def is_stale(st: dict) -> bool:
    if st.get("status") != "running":
        return False
    try:
        beat = _dt.datetime.fromisoformat(st.get("heartbeat") or st.get("started"))
    except (TypeError, ValueError):
        return True
    return (_dt.datetime.now(_dt.timezone.utc) - beat).total_seconds() > STALE_S


def list_jobs(jobs_dir: str | os.PathLike) -> list[dict]:
    """Every job's state, newest first."""
    return [state(jobs_dir, j) for j in reversed(job_ids(jobs_dir))]


def log_tail(jobs_dir: str | os.PathLike, job_id: str, max_bytes: int = 20000) -> str:
    """The end of the job's log, with tqdm's carriage-return redraws collapsed to their last state."""
    text = tail_text(Path(jobs_dir) / _check_id(job_id) / "log.txt", max_bytes)
    return "\n".join(line.split("\r")[-1] for line in text.splitlines())


def tail_text(path: str | os.PathLike, max_bytes: int = 20000) -> str:
    """The last ``max_bytes`` of a text file, decoded leniently; "" when it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _update(folder: Path, **changes) -> dict:
    st = _read_json(folder / "state.json")
    st.update(changes)
    _write_json(folder / "state.json", st)
    return st


def _take(folder: Path, owner: str) -> bool:
    """Create the job's claim file exclusively; False if someone else holds it."""
    try:
        fd = os.open(folder / "claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(owner)
    return True


def claim(jobs_dir: str | os.PathLike, worker: str) -> str | None:
    """Take the oldest queued job for ``worker``; mark it running; return its id (None when the queue is empty)."""
    for job_id in job_ids(jobs_dir):
        folder = Path(jobs_dir) / job_id
        if _read_json(folder / "state.json").get("status") != "queued":
            continue
        if _take(folder, worker):
            if _read_json(folder / "state.json").get("status") != "queued":  # cancelled just before the claim
                continue
            _update(folder, status="running", worker=worker, started=_now(), heartbeat=_now(),
                    message="starting")
            return job_id
    return None


def cancel(jobs_dir: str | os.PathLike, job_id: str) -> str:
    """Cancel a job: a queued one at once, a running one by asking its worker. Returns the new status."""
    folder = Path(jobs_dir) / _check_id(job_id)
    st = _read_json(folder / "state.json")
    status = st.get("status")
    if status == "queued" and _take(folder, "cancelled"):
        _update(folder, status="cancelled", finished=_now(), message="cancelled before it started")
        return "cancelled"
    if status in ("queued", "running"):  # a worker holds it: it stops the run and records the cancellation
        (folder / "cancel").touch()
        return "cancelling"
    return str(status)


def requeue(jobs_dir: str | os.PathLike, job_id: str) -> None:
    """Put a failed, cancelled or stale (worker gone) job back at its place in the queue."""
    folder = Path(jobs_dir) / _check_id(job_id)
    st = state(jobs_dir, job_id)
    if st.get("status") not in ("failed", "cancelled") and not st["stale"]:
        raise InputError(f"job {job_id} is {st.get('status')}; only failed, cancelled or stale jobs can be re-queued")
    for name in ("cancel", "claim"):
        (folder / name).unlink(missing_ok=True)
    _update(folder, status="queued", message=f"re-queued ({st.get('status')}{', worker lost' if st['stale'] else ''})",
            worker=None, started=None, finished=None, heartbeat=None, returncode=None)


def recover_stale(jobs_dir: str | os.PathLike) -> list[str]:
    """Re-queue every running job whose worker stopped sending heartbeats; return their ids."""
    out = []
    for job_id in job_ids(jobs_dir):
        if state(jobs_dir, job_id)["stale"]:
            requeue(jobs_dir, job_id)
            out.append(job_id)
    return out


# ---------------------------------------------------------------------------------------------- the worker


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Child set-up: own process group (cancel kills it whole) and SIGKILL when the worker dies (Linux)."""
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass


NPROC_ENV = "WORKER_NPROC"  # processes per job: > 1 runs each job under torchrun on this machine


def job_command(spec_path: str | os.PathLike, store_path: str | os.PathLike) -> list[str]:
    """The child command of a job: ``python -m engine run SPEC --no-ingest --store STORE``, under
    ``torchrun --standalone --nproc_per_node N`` when ``$WORKER_NPROC`` is N > 1 (one process per GPU, or CPU
    processes splitting the shards; torchrun picks a free port, and its process group is what cancel stops)."""
    run = ["-m", "engine", "run", str(spec_path), "--no-ingest", "--store", str(store_path)]
    raw = os.environ.get(NPROC_ENV, "1").strip() or "1"
    if not raw.isdigit() or int(raw) < 1:
        raise InputError(f"${NPROC_ENV} must be a positive integer, got {raw!r}")
    if int(raw) == 1:
        return [sys.executable, *run]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", raw, *run]


def run_job(jobs_dir: str | os.PathLike, job_id: str, store_path: str | os.PathLike,
            runs_dir: str | os.PathLike | None = None, should_stop=lambda: False) -> str:
    """Run a claimed job to its end in a child process; return its final status.

    The child writes only the run folder (``--no-ingest``). Every :data:`HEARTBEAT_S` the state gets a
    heartbeat and the last log line as its message; a ``cancel`` file (or ``should_stop()``, e.g. the worker
    got SIGTERM) stops the child's whole process group.
    """
    folder = Path(jobs_dir) / _check_id(job_id)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if runs_dir is not None:
        env[RUNS_ENV] = str(runs_dir)
    cmd = job_command(folder / "spec.json", store_path)
    with open(folder / "log.txt", "ab") as log:
        log.write(f"[{_now()}] {' '.join(cmd[1:])}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, preexec_fn=_die_with_parent)
    _update(folder, pid=proc.pid)
    stopped = None
    while proc.poll() is None:
        time.sleep(0.25)
        if stopped is None and (folder / "cancel").exists():
            stopped = "cancelled"
        elif stopped is None and should_stop():
            stopped = "interrupted"
        if stopped:
            _kill_group(proc)
            break
        st = _read_json(folder / "state.json")
        if _seconds_since(st.get("heartbeat")) >= HEARTBEAT_S:
            _update(folder, heartbeat=_now(), message=_last_line(log_tail(jobs_dir, job_id, 4000)) or "running")
    rc = proc.wait()
    tail = log_tail(jobs_dir, job_id, 8000)
    if stopped == "cancelled":
        _update(folder, status="cancelled", finished=_now(), returncode=rc, message="cancelled while running")
    elif stopped == "interrupted":  # the worker is shutting down: give the job back to the queue
        (folder / "claim").unlink(missing_ok=True)
        _update(folder, status="queued", worker=None, returncode=rc, message="re-queued: its worker stopped")
        return "queued"
    elif rc == 0:
        _update(folder, status="done", finished=_now(), returncode=0, message="finished")
    else:
        _update(folder, status="failed", finished=_now(), returncode=rc, message=failure_message(tail, rc))
    return _read_json(folder / "state.json").get("status", "failed")


def failure_message(log: str, rc: int) -> str:
    """Why a run failed, from the end of its log: its last ``error:`` line; else the exception line of a Python
    traceback (whatever was printed after it); else, for a run killed by a signal, that signal; else the
    last line."""
    lines = log.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    if errors:
        return errors[-1][:300]
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if starts:  # the first unindented line after the frames is "ExceptionType: message"
        exc = next((line for line in lines[starts[-1] + 1:] if line.strip() and not line[0].isspace()), "")
        if exc:
            return exc.strip()[:300]
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return f"the run process was killed by {name}" + (" (out of memory?)" if -rc == signal.SIGKILL else "")
    return _last_line(log) or f"exit status {rc}"


def _kill_group(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _seconds_since(stamp: str | None) -> float:
    try:
        return (_dt.datetime.now(_dt.timezone.utc) - _dt.datetime.fromisoformat(stamp)).total_seconds()
    except (TypeError, ValueError):
        return float("inf")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def worker_loop(jobs_dir: str | os.PathLike, store_path: str | os.PathLike, runs_dir=None, *, once: bool = False,
                poll_s: float = 1.0, log=print, device: str | None = None) -> int:
    """Claim and run jobs in FIFO order until SIGTERM/SIGINT (or, with ``once``, until the queue is empty).
    ``device``: how the worker's heartbeat file describes its device (the CLI passes
    ``engine.model.base.detect_device()``). Returns the number of jobs run."""
    worker = f"{socket.gethostname()}:{os.getpid()}"
    stop = {"flag": False}

    def on_signal(signum, _frame):
        stop["flag"] = True

    # The handlers go in before the heartbeat file appears: whoever sees the file may signal the worker at once,
    # and a SIGTERM that met the default handler would kill it without removing the file.
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        me = workers.register(jobs_dir, device)  # the heartbeat file that shows this worker on the Jobs page
    except BaseException:
        for s, handler in old.items():
            signal.signal(s, handler)
        raise
    n = 0
    try:
        log(f"worker {worker} ({me.info['device']}): jobs in {Path(jobs_dir).resolve()}")
        while not stop["flag"]:
            for job_id in recover_stale(jobs_dir):
                log(f"re-queued job {job_id}: its worker was lost")
            job_id = claim(jobs_dir, worker)
            if job_id is None:
                if once:
                    break
                time.sleep(poll_s)
                continue
            log(f"running job {job_id}")
            me.set_job(job_id)
            status = run_job(jobs_dir, job_id, store_path, runs_dir, should_stop=lambda: stop["flag"])
            me.set_job(None)
            log(f"job {job_id}: {status}")
            n += 1
    finally:
        me.close()
        for s, handler in old.items():
            signal.signal(s, handler)
    return n
