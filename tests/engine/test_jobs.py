"""The job queue: FIFO claims, cancel, re-queue, stale workers; real workers run, cancel and survive SIGKILL."""

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import jobs
from engine.errors import InputError
from engine.runfolder import list_complete_runs
from engine.spec import spec_from_dict

REPO = Path(__file__).resolve().parents[2]


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
