"""The job queue: FIFO claims, cancel, re-queue, stale workers; real workers run, cancel and survive SIGKILL."""

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import InputError
from engine.jobs import queue as jobs
from engine.runfolder.runformat import list_complete_runs
from engine.spec.load import spec_from_dict

REPO = Path(__file__).resolve().parents[3]


def small_spec(tiny_spec, name="job-run", epochs=2, **scoring):
    return spec_from_dict({**tiny_spec, "name": name, "train": {**tiny_spec["train"], "epochs": epochs},
                           "scoring": {**tiny_spec["scoring"], "methods": ["gradsim"], **scoring}})


def test_fifo_claims_are_exclusive(tmp_path, tiny_spec):
    ids = [jobs.submit(tmp_path, small_spec(tiny_spec, f"r{i}")) for i in range(3)]
    assert jobs.job_ids(tmp_path) == ids == sorted(ids)
    assert [j["status"] for j in jobs.list_jobs(tmp_path)] == ["queued"] * 3
    assert jobs.claim(tmp_path, "w1") == ids[0]
    assert jobs.claim(tmp_path, "w2") == ids[1]
    st = jobs.state(tmp_path, ids[0])
    assert st["status"] == "running" and st["worker"] == "w1" and st["run"] == "r0" and not st["stale"]
    # a second claim on a claimed job fails even if its state still said queued (race with another worker)
    (tmp_path / ids[2] / "claim").write_text("other")
    assert jobs.claim(tmp_path, "w3") is None
    spec = json.loads((tmp_path / ids[0] / "spec.json").read_text())
    assert spec_from_dict(spec).run_name == "r0"


def test_cancel_requeue_and_stale(tmp_path, tiny_spec):
    a, b = (jobs.submit(tmp_path, small_spec(tiny_spec, n)) for n in ("a", "b"))
    assert jobs.cancel(tmp_path, a) == "cancelled"
    assert jobs.claim(tmp_path, "w") == b  # the cancelled job is skipped
    assert jobs.cancel(tmp_path, b) == "cancelling"  # running: its worker is asked to stop
    assert (tmp_path / b / "cancel").exists()
    jobs.requeue(tmp_path, a)
    assert jobs.state(tmp_path, a)["status"] == "queued"
    with pytest.raises(InputError, match="only failed, cancelled or stale"):
        jobs.requeue(tmp_path, b)  # running with a live heartbeat
    # the worker of b vanished: its heartbeat is old
    st = json.loads((tmp_path / b / "state.json").read_text())
    st["heartbeat"] = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=jobs.STALE_S + 5)).isoformat()
    (tmp_path / b / "state.json").write_text(json.dumps(st))
    assert jobs.state(tmp_path, b)["stale"]
    assert jobs.recover_stale(tmp_path) == [b]
    assert jobs.state(tmp_path, b)["status"] == "queued" and not (tmp_path / b / "claim").exists()
    with pytest.raises(InputError, match="not a job id"):
        jobs.state(tmp_path, "../etc")


def _worker(tmp_path, *extra):
    env = {**os.environ, "INFLUENCE_RUNS": str(tmp_path / "runs")}
    return subprocess.Popen([sys.executable, "-m", "engine", "worker", "--store", str(tmp_path / "s.duckdb"),
                             "--jobs", str(tmp_path / "jobs"), "--poll", "0.2", *extra], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(cond, timeout=240, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _in_log(tmp_path, job_id, text):
    return text in jobs.log_tail(tmp_path / "jobs", job_id)


@pytest.mark.slow
def test_worker_runs_a_job_and_writes_only_the_run_folder(tmp_path, tiny_spec):
    job = jobs.submit(tmp_path / "jobs", small_spec(tiny_spec, "done-run"))
    w = _worker(tmp_path, "--once")
    out, _ = w.communicate(timeout=300)
    assert w.returncode == 0, out
    st = jobs.state(tmp_path / "jobs", job)
    assert st["status"] == "done" and st["returncode"] == 0, (st, jobs.log_tail(tmp_path / "jobs", job))
    assert [p.name for p in list_complete_runs(tmp_path / "runs")] == ["done-run"]
    assert not (tmp_path / "s.duckdb").exists()  # workers never open the database


@pytest.mark.slow
def test_a_failing_job_reports_the_error(tmp_path, tiny_spec):
    spec = spec_from_dict({**tiny_spec, "name": "bad", "task": {"name": "file", "path": str(tmp_path / "none.jsonl")}})
    job = jobs.submit(tmp_path / "jobs", spec)
    w = _worker(tmp_path, "--once")
    w.communicate(timeout=300)
    st = jobs.state(tmp_path / "jobs", job)
    assert st["status"] == "failed" and "none.jsonl" in st["message"] and st["message"].startswith("error:")


@pytest.mark.slow
def test_cancel_a_running_job_leaves_nothing(tmp_path, tiny_spec):
    job = jobs.submit(tmp_path / "jobs", small_spec(tiny_spec, "cancelled-run", epochs=400))
    w = _worker(tmp_path)
    try:
        _wait(lambda: _in_log(tmp_path, job, "fine-tune"), what="fine-tuning to start")
        assert jobs.cancel(tmp_path / "jobs", job) == "cancelling"
        _wait(lambda: jobs.state(tmp_path / "jobs", job)["status"] == "cancelled", 60, "the cancellation")
    finally:
        w.send_signal(signal.SIGTERM)
        w.communicate(timeout=60)
    runs = tmp_path / "runs"
    assert list(runs.iterdir()) == []  # no run folder, and the temp folder was removed (SIGTERM unwinds)


@pytest.mark.slow
def test_sigkilled_worker_leaves_no_partial_run_and_requeue_completes_it(tmp_path, tiny_spec):
    job = jobs.submit(tmp_path / "jobs", small_spec(tiny_spec, "killed-run", epochs=40))
    w = _worker(tmp_path)
    _wait(lambda: _in_log(tmp_path, job, "fine-tune"), what="fine-tuning to start")
    child = jobs.state(tmp_path / "jobs", job)["pid"]
    w.kill()  # SIGKILL: no clean-up at all
    w.communicate(timeout=30)
    _wait(lambda: not _alive(child), 30, "the run process to die with its worker")
    assert list_complete_runs(tmp_path / "runs") == []  # nothing the app could ingest
    assert jobs.state(tmp_path / "jobs", job)["status"] == "running"  # until its heartbeat goes stale
    st = json.loads((tmp_path / "jobs" / job / "state.json").read_text())
    st["heartbeat"] = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=jobs.STALE_S + 1)).isoformat()
    (tmp_path / "jobs" / job / "state.json").write_text(json.dumps(st))
    w2 = _worker(tmp_path, "--once")  # recovers the stale job, then runs it
    out, _ = w2.communicate(timeout=400)
    assert "re-queued job" in out, out
    assert jobs.state(tmp_path / "jobs", job)["status"] == "done", jobs.log_tail(tmp_path / "jobs", job)
    assert [p.name for p in list_complete_runs(tmp_path / "runs")] == ["killed-run"]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["killed-run"]  # the dead temp folder was removed


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (not reaped yet by its dead parent's reaper) counts as dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------- damaged state


def _damage(folder: Path, how: str) -> None:
    path = folder / "state.json"
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "not UTF-8":
        path.write_bytes(b'{"status": "queued", "run": "caf\xe9"}')
    elif how == "a JSON array":
        path.write_text('["queued"]')
    elif how == "unreadable":  # root reads any file whatever its mode: a folder in its place cannot be read
        path.unlink()
        path.mkdir()
    elif how == "missing":
        path.unlink()


DAMAGE = ("truncated", "not UTF-8", "a JSON array", "unreadable", "missing")


def test_a_damaged_state_file_shows_the_job_as_broken_with_its_folder_name(tmp_path, tiny_spec):
    ids = [jobs.submit(tmp_path, small_spec(tiny_spec, f"r{i}")) for i in range(len(DAMAGE) + 1)]
    for job_id, how in zip(ids, DAMAGE):
        _damage(tmp_path / job_id, how)
    listed = {j["id"]: j for j in jobs.list_jobs(tmp_path)}
    assert set(listed) == set(ids)  # none is dropped
    for job_id, how in zip(ids, DAMAGE):
        st = listed[job_id]
        assert st["status"] == "broken" and not st["stale"], (how, st)
        assert st["message"].startswith(f"job folder {job_id}: state.json is "), (how, st)
    assert listed[ids[-1]]["status"] == "queued"
    # no worker takes a broken job; the intact one is still claimed
    assert jobs.claim(tmp_path, "w") == ids[-1]
    assert jobs.claim(tmp_path, "w") is None
    with pytest.raises(InputError, match="broken"):
        jobs.requeue(tmp_path, ids[0])


# ---------------------------------------------------------------------------------------------- failure messages

TRACEBACK_LOG = """\
[2026-01-01T00:00:00+00:00] -m engine run spec.json --no-ingest
train grads @1: 100%|##########| 30/30
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File "/app/engine/runfolder.py", line 120, in open_run
    runs_dir.mkdir(parents=True, exist_ok=True)
    ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
FileExistsError: [Errno 17] File exists: '/data/runs'
/usr/lib/python3.11/multiprocessing/resource_tracker.py:254: UserWarning: leaked semaphore objects
"""


@pytest.mark.parametrize("log, rc, message", [
    ("loading\nerror: dataset x.jsonl, line 3: field 'label' is empty\nbye\n", 2,
     "error: dataset x.jsonl, line 3: field 'label' is empty"),
    (TRACEBACK_LOG, 1, "FileExistsError: [Errno 17] File exists: '/data/runs'"),
    ("train grads @1:  40%|####      | 12/30\n", -signal.SIGKILL,
     "the run process was killed by SIGKILL (out of memory?)"),
    ("train grads @1:  40%|####      | 12/30\n", -signal.SIGSEGV, "the run process was killed by SIGSEGV"),
    ("something went wrong\n\n", 3, "something went wrong"),
    ("", 3, "exit status 3"),
])
def test_the_failure_message_says_why_the_run_failed(log, rc, message):
    assert jobs.failure_message(log, rc) == message


# ---------------------------------------------------------------------------------------------- claim race

RACER = """
import os, sys, time
from engine.jobs import queue as jobs
jobs_dir, go, name = sys.argv[1:4]
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.0005)
print(jobs.claim(jobs_dir, name) or "-", flush=True)
"""


def test_processes_claiming_at_the_same_instant_each_get_a_different_job(tmp_path, tiny_spec):
    """8 processes released by one file at the same instant race for 3 queued jobs: every job is taken by
    exactly one of them, the state names that worker, and the other 5 get nothing."""
    ids = [jobs.submit(tmp_path / "jobs", small_spec(tiny_spec, f"r{i}")) for i in range(3)]
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path / "jobs"), str(go), f"racer-{i}"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True) for i in range(8)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        go.touch()
        got = {f"racer-{i}": p.communicate(timeout=60)[0].strip() for i, p in enumerate(procs)}
    finally:
        for p in procs:
            p.kill()
    winners = {w: j for w, j in got.items() if j != "-"}
    assert sorted(winners.values()) == ids, got  # each job once
    for worker, job_id in winners.items():
        assert (tmp_path / "jobs" / job_id / "claim").read_text() == worker
        assert jobs.state(tmp_path / "jobs", job_id)["worker"] == worker


# ---------------------------------------------------------------------------------------------- real workers


def datetime_of(stamp):
    return dt.datetime.fromisoformat(stamp)


@pytest.mark.slow
def test_worker_heartbeat_advances_and_sigterm_requeues_the_running_job(tmp_path, tiny_spec):
    """While a job runs its heartbeat moves on and its message follows the log; SIGTERM to the worker stops the
    run (its process group) and gives the job back to the queue, ready for the next worker."""
    jobs_dir = tmp_path / "jobs"
    job = jobs.submit(jobs_dir, small_spec(tiny_spec, "sigterm-run", epochs=400))
    w = _worker(tmp_path)
    try:
        _wait(lambda: _in_log(tmp_path, job, "fine-tune"), what="fine-tuning to start")
        first = jobs.state(jobs_dir, job)
        assert first["status"] == "running" and not first["stale"]
        beats = [first["heartbeat"]]
        for _ in range(2):
            _wait(lambda: jobs.state(jobs_dir, job)["heartbeat"] != beats[-1], 30, "the next heartbeat")
            beats.append(jobs.state(jobs_dir, job)["heartbeat"])
        times = [datetime_of(b) for b in beats]
        assert times[0] < times[1] < times[2], beats
        later = jobs.state(jobs_dir, job)
        assert later["message"] not in ("starting", "running") and later["message"] in jobs.log_tail(jobs_dir, job)
        child = later["pid"]
        w.send_signal(signal.SIGTERM)
        out, _ = w.communicate(timeout=60)
    finally:
        if w.poll() is None:
            w.kill()
            w.communicate()
    assert w.returncode == 0, out
    assert f"job {job}: queued" in out, out
    st = jobs.state(jobs_dir, job)
    assert st["status"] == "queued" and st["worker"] is None and st["message"] == "re-queued: its worker stopped"
    assert not (jobs_dir / job / "claim").exists()
    _wait(lambda: not _alive(child), 30, "the run process to stop")
    assert list((tmp_path / "runs").iterdir()) == []  # the run unwound: not even its temp folder is left
    assert jobs.claim(jobs_dir, "next-worker") == job


@pytest.mark.slow
def test_a_run_that_dies_with_a_traceback_fails_with_the_exception_line_and_keeps_its_log(tmp_path, tiny_spec):
    """Not an ``error:`` line but a crash (here: $INFLUENCE_RUNS is a file, so the run folder cannot be made):
    the job fails with the exception as its message, and the whole traceback is in its log."""
    runs = tmp_path / "runs-is-a-file"
    runs.write_text("not a folder")
    job = jobs.submit(tmp_path / "jobs", small_spec(tiny_spec, "crash-run"))
    env = {**os.environ, "INFLUENCE_RUNS": str(runs)}
    w = subprocess.run([sys.executable, "-m", "engine", "worker", "--once", "--store", str(tmp_path / "s.duckdb"),
                        "--jobs", str(tmp_path / "jobs"), "--poll", "0.2"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    assert w.returncode == 0, w.stdout + w.stderr
    st = jobs.state(tmp_path / "jobs", job)
    assert st["status"] == "failed" and st["returncode"] == 1, st
    assert st["message"] == f"FileExistsError: [Errno 17] File exists: '{runs}'", st
    log = jobs.log_tail(tmp_path / "jobs", job)
    assert "Traceback (most recent call last)" in log and "open_run" in log
    assert runs.read_text() == "not a folder"


@pytest.mark.slow
def test_two_worker_processes_race_for_the_queue_and_each_job_runs_once(tmp_path, tiny_spec):
    """Two workers started together on two queued jobs: each takes one (a job takes seconds, so the first cannot
    have finished its job before the second looks), both runs are complete, and no job ran twice."""
    ids = [jobs.submit(tmp_path / "jobs", small_spec(tiny_spec, f"raced-{i}", epochs=1)) for i in range(2)]
    workers = [_worker(tmp_path, "--once") for _ in range(2)]
    outs = [w.communicate(timeout=400)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs
    states = [jobs.state(tmp_path / "jobs", j) for j in ids]
    assert [s["status"] for s in states] == ["done", "done"], states
    names = {f"{socket.gethostname()}:{w.pid}" for w in workers}
    assert {s["worker"] for s in states} == names  # one job each
    for job_id in ids:  # run_job writes one command line per run into the job's log
        assert jobs.log_tail(tmp_path / "jobs", job_id).count(" -m engine run ") == 1
    for w, out in zip(workers, outs):
        assert out.count("running job ") == 1, out
    assert [p.name for p in list_complete_runs(tmp_path / "runs")] == ["raced-0", "raced-1"]


def test_job_command_runs_under_torchrun_with_worker_nproc(monkeypatch, tmp_path):
    """$WORKER_NPROC = N > 1: each job runs as N torchrun processes on this machine; 1 (default): one process."""
    monkeypatch.delenv("WORKER_NPROC", raising=False)
    plain = jobs.job_command(tmp_path / "spec.json", tmp_path / "s.duckdb")
    assert plain[1:] == ["-m", "engine", "run", str(tmp_path / "spec.json"), "--no-ingest", "--store",
                         str(tmp_path / "s.duckdb")]
    monkeypatch.setenv("WORKER_NPROC", "4")
    cmd = jobs.job_command(tmp_path / "spec.json", tmp_path / "s.duckdb")
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4"]
    assert cmd[6:] == plain[1:]
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("WORKER_NPROC", bad)
        with pytest.raises(InputError, match="WORKER_NPROC"):
            jobs.job_command(tmp_path / "spec.json", tmp_path / "s.duckdb")
