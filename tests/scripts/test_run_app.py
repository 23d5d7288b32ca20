"""``make run``'s launcher (scripts/run_app.py): refuses a taken port plainly, starts the app and one worker on the
same store, and never leaves the worker behind — on SIGTERM, or when the app dies."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from engine.jobs import workers

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path, port):
    env = {k: v for k, v in os.environ.items() if k not in ("INFLUENCE_RUNS", "INFLUENCE_JOBS")}
    env["INFLUENCE_STORE"] = str(tmp_path / "influence.duckdb")
    return subprocess.Popen([sys.executable, "scripts/run_app.py", "--port", str(port), "--address", "127.0.0.1"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _started(proc, tmp_path) -> tuple[int, int, int]:
    """Wait for the launcher's start line and the worker's heartbeat file; return the pids of the app, the worker
    and the query server."""
    line = proc.stdout.readline()
    m = re.search(r"\(pid (\d+),.*worker pid (\d+)", line)
    assert m, line
    app_pid, worker_pid = int(m.group(1)), int(m.group(2))
    q = re.search(r"query server pid (\d+)", line)
    assert q, line
    end = time.time() + 60
    while not [w for w in workers.alive(tmp_path / "jobs") if w["pid"] == worker_pid]:
        assert time.time() < end, "the worker never registered"
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    return app_pid, worker_pid, int(q.group(1))


def test_a_taken_port_is_refused_with_a_plain_message_and_nothing_starts(tmp_path):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        out, _ = _launch(tmp_path, port).communicate(timeout=60)
    assert f"make run: port {port} is in use by another program; start on a free port: make run PORT={port + 1}" \
        in out
    assert not (tmp_path / "worker.log").exists() and not (tmp_path / "jobs").exists()


def test_sigterm_stops_the_app_and_the_worker(tmp_path):
    port = _free_port()
    proc = _launch(tmp_path, port)
    try:
        app_pid, worker_pid, query_pid = _started(proc, tmp_path)
        end = time.time() + 60
        while True:  # the app answers on the port
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                assert time.time() < end, "the app never answered"
                time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert _gone(app_pid) and _gone(worker_pid) and _gone(query_pid)
    assert workers.alive(tmp_path / "jobs") == []
    assert "jobs in" in (tmp_path / "worker.log").read_text()  # the worker's own log, next to the store


def test_when_the_app_dies_the_worker_is_stopped_too(tmp_path):
    proc = _launch(tmp_path, _free_port())
    try:
        app_pid, worker_pid, query_pid = _started(proc, tmp_path)
        os.kill(app_pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0 and "the app exited" in out, out
    assert _gone(worker_pid) and _gone(query_pid) and workers.alive(tmp_path / "jobs") == []
