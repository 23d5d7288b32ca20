"""The worker registry: heartbeat files, dead workers left out and cleaned, real workers register and unregister,
and a worker spawned for the app never outlives it."""

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from engine.jobs import queue as jobs
from engine.jobs import workers
from engine.spec.load import spec_from_dict

REPO = Path(__file__).resolve().parents[3]


def _ago(seconds: float) -> str:
    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)).isoformat(timespec="seconds")


def _wait(cond, timeout=60, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_register_writes_refreshes_and_removes_its_file(tmp_path):
    reg = workers.register(tmp_path, device="cpu (test)", heartbeat_s=0.05)
    try:
        info = json.loads(reg.path.read_text())
        assert reg.path.parent == tmp_path / ".workers"
        assert {k: info[k] for k in ("host", "pid", "device", "job", "jobs_done")} == {
            "host": socket.gethostname(), "pid": os.getpid(), "device": "cpu (test)", "job": None, "jobs_done": 0}
        assert jobs.job_ids(tmp_path) == []  # the hidden registry folder is not a job
        reg.set_job("job-1")
        assert json.loads(reg.path.read_text())["job"] == "job-1"
        reg.set_job(None)
        assert json.loads(reg.path.read_text())["jobs_done"] == 1
        # the background thread keeps the heartbeat fresh (here: it overwrites an old one)
        reg.info["heartbeat"] = _ago(3600)
        reg.path.write_text(json.dumps(reg.info))
        _wait(lambda: not workers.is_dead(json.loads(reg.path.read_text())), 5, "a fresh heartbeat")
        assert [w["pid"] for w in workers.alive(tmp_path)] == [os.getpid()]
    finally:
        reg.close()
    assert not reg.path.exists() and workers.alive(tmp_path) == []


def _plant(folder: Path, name: str, **info) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(info))
    return path


def test_dead_workers_are_left_out_and_their_files_removed(tmp_path):
    reg_dir = tmp_path / ".workers"
    host = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone_pid = int(dead.stdout)  # a pid that existed and has exited
    stale = _plant(reg_dir, "stale", host="elsewhere", pid=1, device="cuda", heartbeat=_ago(workers.STALE_S + 5),
                   started=_ago(100))
    no_pid = _plant(reg_dir, "gone", host=host, pid=gone_pid, device="cpu", heartbeat=_ago(0), started=_ago(10))
    garbage = reg_dir / "garbage.json"
    garbage.write_text("{not json")
    remote = _plant(reg_dir, "remote", host="other-host", pid=gone_pid, device="cuda (1 GPU)", heartbeat=_ago(1),
                    started=_ago(50))
    here = _plant(reg_dir, "here", host=host, pid=os.getpid(), device="cpu", heartbeat=_ago(1), started=_ago(5))
    live = workers.alive(tmp_path)
    # another host's pid cannot be checked from here: its fresh heartbeat counts; oldest first
    assert [(w["host"], w["pid"]) for w in live] == [("other-host", gone_pid), (host, os.getpid())]
    assert not stale.exists() and not no_pid.exists() and not garbage.exists()
    assert remote.exists() and here.exists()
    assert workers.is_dead({}) and workers.is_dead({"heartbeat": "yesterday"})
    assert workers.alive(tmp_path / "nowhere") == []


def _start_worker(tmp_path, *extra) -> subprocess.Popen:
    env = {**os.environ, "INFLUENCE_RUNS": str(tmp_path / "runs")}
    return subprocess.Popen([sys.executable, "-m", "engine", "worker", "--store", str(tmp_path / "s.duckdb"),
                             "--jobs", str(tmp_path / "jobs"), "--poll", "0.2", *extra], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _registered(tmp_path, pid):
    return [w for w in workers.alive(tmp_path / "jobs") if w["pid"] == pid]


def test_a_real_worker_shows_up_and_disappears_when_stopped_or_killed(tmp_path):
    w = _start_worker(tmp_path)
    _wait(lambda: _registered(tmp_path, w.pid), 60, "the worker's heartbeat file")
    (info,) = _registered(tmp_path, w.pid)
    assert info["host"] == socket.gethostname() and info["job"] is None and info["device"]
    w.send_signal(signal.SIGTERM)
    out, _ = w.communicate(timeout=30)
    assert w.returncode == 0, out
    assert not list((tmp_path / "jobs" / ".workers").glob("*.json"))  # removed on a clean stop
    w = _start_worker(tmp_path)
    _wait(lambda: _registered(tmp_path, w.pid), 60, "the second worker's heartbeat file")
    w.kill()  # SIGKILL: no clean-up; its pid is gone, so it counts as dead at once
    w.communicate(timeout=30)
    assert workers.alive(tmp_path / "jobs") == []
    assert not list((tmp_path / "jobs" / ".workers").glob("*.json"))


def test_the_stop_handler_is_in_place_before_the_heartbeat_file_appears(tmp_path, monkeypatch):
    """Whoever sees the heartbeat file may send SIGTERM at once (the test above does): the worker must already
    catch it then, or the default handler kills it and leaves its file behind."""
    from engine.jobs import queue

    seen = {}
    real_register = workers.register

    def register(*args, **kwargs):
        seen["handler"] = signal.getsignal(signal.SIGTERM)
        return real_register(*args, **kwargs)

    monkeypatch.setattr(workers, "register", register)
    before = signal.getsignal(signal.SIGTERM)
    assert queue.worker_loop(tmp_path / "jobs", tmp_path / "s.duckdb", once=True, log=lambda _: None) == 0
    assert seen["handler"] not in (before, signal.SIG_DFL)  # the worker's own handler, already installed
    assert signal.getsignal(signal.SIGTERM) == before  # and put back when the loop ends


SPAWNER = """
import sys, threading, time
from engine.jobs import workers
box = []
t = threading.Thread(target=lambda: box.append(workers.spawn_once_worker(sys.argv[1], sys.argv[2], sys.argv[3])))
t.start(); t.join()  # started from a thread that has ended, like a Streamlit script run
print(box[0].pid, flush=True)
time.sleep(600)
"""


def test_a_spawned_worker_outlives_its_thread_but_not_its_process(tmp_path, tiny_spec):
    jobs_dir = tmp_path / "jobs"
    spec = spec_from_dict({**tiny_spec, "name": "long", "train": {**tiny_spec["train"], "epochs": 400},
                           "scoring": {**tiny_spec["scoring"], "methods": ["gradsim"]}})
    job = jobs.submit(jobs_dir, spec)
    env = {**os.environ, "INFLUENCE_RUNS": str(tmp_path / "runs")}
    parent = subprocess.Popen([sys.executable, "-c", SPAWNER, str(jobs_dir), str(tmp_path / "s.duckdb"),
                               str(tmp_path / "worker.log")], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        _wait(lambda: jobs.state(jobs_dir, job)["status"] == "running", 120, "the spawned worker to take the job")
        assert not _pid_gone(pid) and _registered(tmp_path, pid)
        parent.kill()  # the app dies without any clean-up
        parent.wait(timeout=10)
        _wait(lambda: _pid_gone(pid), 60, "the spawned worker to stop with its parent")
    finally:
        parent.kill()
    st = jobs.state(jobs_dir, job)
    assert st["status"] == "queued" and st["message"] == "re-queued: its worker stopped", st
    assert "worker --once" in (tmp_path / "worker.log").read_text()
