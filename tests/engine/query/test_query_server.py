"""The query server over HTTP, through the torch-free client: found by its state file, five queries at once all
answered (one at a time, none lost), bad input as a 400 with the message, a dead server seen as one."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from engine.errors import InputError
from engine.paths import REPO_ROOT, query_server_file
from engine.query.client import ServerError, find_server, wait_ready
from engine.query.server import serve
from engine.query.session import QuerySession


@pytest.fixture(scope="module")
def server(tiny_run):
    started = {}
    ready = threading.Event()

    def on_ready(httpd):
        started["httpd"] = httpd
        ready.set()

    t = threading.Thread(target=serve, args=(tiny_run.parent,), kwargs={"ready": on_ready}, daemon=True)
    t.start()
    assert ready.wait(30)
    yield find_server(tiny_run.parent)
    started["httpd"].shutdown()
    t.join(10)
    assert not query_server_file(tiny_run.parent).exists()  # a clean exit removes the state file


def _test_prompts(folder):
    t = pq.read_table(folder / "samples.parquet").to_pandas()
    return t[t.split == "test"].sort_values("sample_id").reset_index(drop=True)


def test_the_server_is_found_by_its_state_file_and_loads_a_run(server, tiny_run):
    assert server is not None and server.pid == os.getpid()
    wait_ready(server, tiny_run.name)
    assert server.health()["sessions"][tiny_run.name]["state"] == "ready"


def test_five_queries_at_once_are_all_answered_with_their_own_results(server, tiny_run):
    test = _test_prompts(tiny_run)
    results, errors = {}, []

    def one(j):
        try:
            results[j] = server.query(tiny_run.name, test.prompt[j], test.response[j], methods=["gradsim"], k=30)
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(j,)) for j in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and sorted(results) == [0, 1, 2, 3, 4]
    reference = QuerySession(tiny_run)  # the same question asked in-process, one at a time
    for j, a in results.items():
        want = reference.ask(test.prompt[j], test.response[j], methods=["gradsim"], k=30).top["gradsim"]
        got = a["top"]["gradsim"]
        assert [i for i, _ in got] == [i for i, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-6)


def test_bad_input_comes_back_as_the_message(server, tiny_run):
    with pytest.raises(InputError, match="'prompt' is empty"):
        server.query(tiny_run.name, "  ", "x")
    with pytest.raises(InputError, match="run name"):
        server.query("../etc", "a", "b")
    with pytest.raises(InputError, match="'kind'"):
        server.query(tiny_run.name, "a", "b", kind="other")


def test_a_candidate_is_answered_over_http(server, tiny_run):
    a = server.query(tiny_run.name, "a b a", "rule 1", kind="candidate", methods=["datainf", "bm25"], k=3)
    assert list(a["top"]) == ["datainf"] and "bm25" in a["cannot"] and len(a["top"]["datainf"]) == 3


def test_a_stale_state_file_is_no_server(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    query_server_file(runs).write_text(json.dumps({"pid": dead.pid, "host": "127.0.0.1", "port": 9,
                                                   "runs_dir": str(runs.resolve())}))
    assert find_server(runs) is None


@pytest.mark.slow
def test_a_server_killed_mid_query_is_reported_as_gone(tiny_run, tmp_path):
    """A real server process, SIGKILLed while it answers: the client raises ServerError (the page retries)."""
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / tiny_run.name)
    env = {**os.environ, "INFLUENCE_RUNS": str(runs)}
    proc = subprocess.Popen([sys.executable, "-m", "engine", "serve-query"], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.time() + 60
        server = None
        while server is None and time.time() < end:
            server = find_server(runs)
            time.sleep(0.2)
        assert server is not None and server.pid == proc.pid
        wait_ready(server, tiny_run.name)
        threading.Timer(0.3, lambda: proc.send_signal(signal.SIGKILL)).start()
        with pytest.raises(ServerError):
            for _ in range(50):  # queries until the kill lands in one
                server.query(tiny_run.name, "a b a b a", "rule 3", k=5)
        assert find_server(runs) is None
    finally:
        proc.kill()
        proc.wait()
