"""AppTest: the Ask page over the tiny run (which has a query index), answered by a real query server in a thread.

A question is answered, saved and shown as the server ranks it; its URL reopens it; an empty prompt is refused
before any server is asked; a run without an index shows the command that builds one; a server that dies mid-query
is asked again once; five sessions asking at once all get their own answer. The page itself never imports torch
(tests/app/test_jobs_form.py runs every page in a fresh interpreter); the server thread here does.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from engine.paths import REPO_ROOT, query_server_file
from engine.query.client import find_server
from engine.query.server import serve
from ui.ask_view import overlap_matrix

PAGE = str(REPO_ROOT / "app_pages" / "ask.py")
METHODS = ["gradsim", "datainf", "repsim"]
HOSTILE = "a b a <img src=x onerror=alert(1)> **bold** [x](javascript:alert(1))"


@pytest.fixture(scope="module")
def served(tiny_run, tmp_path_factory):
    """A runs folder holding a copy of the tiny run, served by a query server in a thread; returns (runs, server)."""
    runs = tmp_path_factory.mktemp("ask") / "runs"
    shutil.copytree(tiny_run, runs / tiny_run.name)
    started, ready = {}, threading.Event()

    def on_ready(httpd):
        started["httpd"] = httpd
        ready.set()

    t = threading.Thread(target=serve, args=(runs,), kwargs={"ready": on_ready}, daemon=True)
    t.start()
    assert ready.wait(60)
    yield runs, find_server(runs)
    started["httpd"].shutdown()
    t.join(10)


@pytest.fixture
def ask_env(served, monkeypatch, tmp_path):
    """A fresh store (in ``tmp_path``) over the served runs folder; returns (run name, server)."""
    runs, server = served
    monkeypatch.setenv("INFLUENCE_STORE", str(tmp_path / "s.duckdb"))
    monkeypatch.setenv("INFLUENCE_RUNS", str(runs))
    monkeypatch.delenv("INFLUENCE_READ_ONLY", raising=False)
    st.cache_resource.clear()
    yield next(runs.iterdir()).name, server
    st.cache_resource.clear()


def _ask(at: AppTest, prompt: str, response: str = "", methods=METHODS, k: int = 5) -> AppTest:
    at.text_area(key="ask_prompt").input(prompt)
    at.text_area(key="ask_response").input(response)
    at.multiselect(key="ask_methods_prompt").set_value(methods)
    at.number_input(key="ask_k_prompt").set_value(k)
    at.button(key="ask_submit").click().run(timeout=300)  # the first question waits for the run to load
    assert not at.exception, at.exception
    return at


def _qid(at: AppTest) -> str:
    """The saved question's id in the page's URL."""
    value = at.query_params["q"]
    return value[0] if isinstance(value, list) else value


def _ranked(at: AppTest, methods=METHODS) -> dict[str, pd.DataFrame]:
    """The per-method ranked tables by method: the page draws them in the order the methods were asked in."""
    tables = [d.value for d in at.dataframe if {"rank", "score", "id"} <= set(d.value.columns)]
    assert len(tables) in (0, len(methods))
    return dict(zip(methods, tables))


def test_a_question_is_answered_saved_and_reopened_by_its_url(ask_env, tiny_data, open_page):
    run, server = ask_env
    at = _ask(open_page(PAGE), HOSTILE, "rule 1")
    assert not at.error, [e.value for e in at.error]
    qid = _qid(at)
    want = server.query(run, HOSTILE, "rule 1", methods=METHODS, k=5)["top"]
    tables = _ranked(at)
    assert sorted(tables) == sorted(METHODS)
    for method, table in tables.items():
        assert table["id"].tolist() == [i for i, _ in want[method]]
        assert table.score.tolist() == pytest.approx([s for _, s in want[method]], rel=1e-9)
        first = tiny_data.train.loc[int(table["id"].iloc[0])]
        assert table.label.iloc[0] == first.label and table.prompt.iloc[0] == " ".join(first.prompt.split())
    assert [c.value for c in at.code][:2] == [HOSTILE, "rule 1"]  # the question, as text
    assert not any("<img" in m.value for m in at.markdown)  # never as markup
    assert at.get("plotly_chart")  # the agreement between the methods
    again = open_page(PAGE, q=qid)  # a new session: the link alone reopens the question, from the store
    assert not again.error
    assert {m: t["id"].tolist() for m, t in _ranked(again).items()} == {m: t["id"].tolist() for m, t in tables.items()}
    assert again.selectbox(key=f"ask_past_{qid}").value == qid  # listed among the run's past questions


def test_the_token_view_of_a_drilled_sample_comes_from_the_server(ask_env, open_page):
    run, server = ask_env
    at = _ask(open_page(PAGE), "a b b a", "rule 4", methods=["gradsim", "repsim"], k=3)
    tops = [int(t["id"].iloc[0]) for t in _ranked(at, ["gradsim", "repsim"]).values()]
    first = min(tops)
    assert at.selectbox(key="ask_tok_item").value == first  # a best-ranked sample (rank 1, smallest id) first
    at.button(key="ask_tok_go").click().run(timeout=300)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="ask_tok_method").options == ["gradsim"]  # RepSim has no split over tokens
    want = server.tokens(run, "prompt", "a b b a", "rule 4", int(first), methods=["gradsim", "repsim"])
    assert "repsim" in want["skipped"]
    shaded = [m.value for m in at.markdown if "token 0:" in m.value]
    assert len(shaded) == 1 and shaded[0].count("<span title=\"token ") == len(want["pieces"])
    (table,) = [d.value for d in at.dataframe if "of score" in d.value.columns]
    assert set(table.share) <= set(want["shares"]["gradsim"])
    caption = next(c.value for c in at.caption if "the shares add up to" in c.value)
    assert f"{want['scores']['gradsim']:.5g}" in caption


def test_a_candidate_training_text_ranks_the_runs_test_prompts(ask_env, tiny_data, open_page):
    run, server = ask_env
    at = open_page(PAGE)
    at.radio(key="ask_kind").set_value("candidate").run()
    assert "ask_generate" not in [c.key for c in at.checkbox]  # a training text is given, never generated
    at.text_area(key="ask_prompt").input("b b a")
    at.text_area(key="ask_response").input("rule 2")
    at.multiselect(key="ask_methods_candidate").set_value(["datainf"])
    at.number_input(key="ask_k_candidate").set_value(3)
    at.button(key="ask_submit").click().run(timeout=300)
    assert not at.exception and not at.error, [e.value for e in at.error]
    want = server.query(run, "b b a", "rule 2", kind="candidate", methods=["datainf"], k=3)["top"]["datainf"]
    (table,) = _ranked(at, ["datainf"]).values()
    assert table["id"].tolist() == [i for i, _ in want]  # test prompt ids, with their own text
    assert table.prompt.tolist() == [" ".join(tiny_data.test.loc[i].prompt.split()) for i, _ in want]
    assert "Top 3 test prompts per method" in [h.value for h in at.subheader]


def test_an_unknown_saved_query_id_is_said_and_dropped(ask_env, open_page):
    at = open_page(PAGE, q="feedfacecafe")
    assert any("no saved query with id 'feedfacecafe'" in w.value for w in at.warning)
    assert "q" not in at.query_params and not _ranked(at)


def test_an_empty_prompt_is_refused_before_any_server_is_asked(ask_env, monkeypatch, open_page):
    def boom(*a, **kw):
        raise AssertionError("the server was asked")

    monkeypatch.setattr("engine.query.client.Server.query", boom)
    at = _ask(open_page(PAGE), "   \n  ", "rule 1")
    assert [w.value for w in at.warning] == ["Type a prompt first: an empty or blank text cannot be attributed."]
    assert not at.error and "q" not in at.query_params and not _ranked(at)


def test_a_run_without_an_index_shows_the_command_that_builds_one(tiny_run, monkeypatch, tmp_path, open_page):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / tiny_run.name, ignore=shutil.ignore_patterns("index"))
    monkeypatch.setenv("INFLUENCE_STORE", str(tmp_path / "s.duckdb"))
    monkeypatch.setenv("INFLUENCE_RUNS", str(runs))
    st.cache_resource.clear()
    at = open_page(PAGE)
    assert not at.error
    (info,) = [i.value for i in at.info]
    assert f"`python -m engine index --run {tiny_run.name}`" in info
    assert not at.get("button") and not at.get("text_area")  # nothing to ask with


class _Dying(BaseHTTPRequestHandler):
    """A server that looks alive (health, load) and dies in the middle of a query: it points the state file at the
    real server (as a restarted one would) and drops the connection without an answer."""

    run, real = "", {}

    def log_message(self, *args):
        pass

    def _json(self, payload):
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        self._json({"pid": os.getpid(), "sessions": {self.run: {"state": "ready"}}})

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/query":
            query_server_file(self.real["runs_dir"]).write_text(json.dumps(self.real))
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self._json({"sessions": {self.run: {"state": "ready"}}})


def test_a_server_dying_mid_query_is_said_and_asked_again_once(ask_env, served, open_page):
    run, server = ask_env
    runs, _ = served
    state = query_server_file(runs)
    real = json.loads(state.read_text())
    handler = type("Dying", (_Dying,), {"run": run, "real": real})
    dying = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=dying.serve_forever, daemon=True).start()
    try:
        state.write_text(json.dumps({**real, "port": dying.server_address[1]}))
        assert find_server(runs).port == dying.server_address[1]
        at = _ask(open_page(PAGE), "b a b", "rule 2", methods=["gradsim"], k=3)
    finally:
        dying.shutdown()
        state.write_text(json.dumps(real))
    assert not at.error, [e.value for e in at.error]
    assert any(w.value.startswith("The query server stopped answering") for w in at.warning)
    want = server.query(run, "b a b", "rule 2", methods=["gradsim"], k=3)["top"]["gradsim"]
    assert _ranked(at, ["gradsim"])["gradsim"]["id"].tolist() == [i for i, _ in want]


def test_a_dead_server_named_by_the_state_file_is_replaced_by_a_new_one(ask_env, served, monkeypatch, open_page):
    run, server = ask_env
    runs, _ = served
    state = query_server_file(runs)
    real = json.loads(state.read_text())
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    started = []

    def start(store_path, runs_dir):  # what start_server does, without a second torch process: the live one
        started.append(runs_dir)
        state.write_text(json.dumps(real))
        return find_server(runs_dir)

    monkeypatch.setattr("ui.ask.start_server", start)
    state.write_text(json.dumps({**real, "pid": gone.pid}))
    try:
        at = _ask(open_page(PAGE), "a a b", "rule 3", methods=["repsim"], k=2)
    finally:
        state.write_text(json.dumps(real))
    assert not at.error, [e.value for e in at.error]
    assert started == [runs] and not at.warning  # started once, at once: no dying server to report
    want = server.query(run, "a a b", "rule 3", methods=["repsim"], k=2)["top"]["repsim"]
    assert _ranked(at, ["repsim"])["repsim"]["id"].tolist() == [i for i, _ in want]


@pytest.fixture
def one_compile_at_a_time(monkeypatch):
    """Serialise page compilation across AppTests.

    CPython 3.11 keeps the AST constructor's recursion depth in interpreter-wide state, so two threads running
    ``ast.parse`` at once can fail with "AST constructor recursion depth mismatch" (seen in CI). A Streamlit server
    compiles a page once, under its one script cache's lock; AppTest makes a fresh cache for every run, so five
    AppTests in threads compile at once. One lock over every cache restores what the server does.
    """
    from streamlit.runtime.scriptrunner.script_cache import ScriptCache

    lock, compile_page = threading.Lock(), ScriptCache.get_bytecode

    def serialised(self, script_path):
        with lock:
            return compile_page(self, script_path)

    monkeypatch.setattr(ScriptCache, "get_bytecode", serialised)


def test_five_sessions_asking_at_once_all_get_their_own_answer(ask_env, open_page, one_compile_at_a_time):
    run, server = ask_env
    prompts = [f"{'a b ' * (j + 1)}a" for j in range(5)]
    pages = [open_page(PAGE) for _ in prompts]
    with ThreadPoolExecutor(len(prompts)) as pool:  # five sessions asking at the same time
        done = dict(enumerate(pool.map(lambda j: _ask(pages[j], prompts[j], "rule 1", methods=["gradsim"], k=4),
                                       range(len(prompts)))))
    ids = set()
    for j, at in done.items():
        assert not at.error, [e.value for e in at.error]
        want = server.query(run, prompts[j], "rule 1", methods=["gradsim"], k=4)["top"]["gradsim"]
        assert _ranked(at, ["gradsim"])["gradsim"]["id"].tolist() == [i for i, _ in want]
        ids.add(_qid(at))
    assert len(ids) == 5  # five saved questions, none lost
    listed = open_page(PAGE)
    (past,) = [d.value for d in listed.dataframe if "created" in d.value.columns]
    assert sorted(past.prompt) == sorted(prompts)


def test_the_overlap_matrix_counts_shared_top_ids():
    m = overlap_matrix({"a": [[1, 0.9], [2, 0.5], [3, 0.1]], "b": [[3, 2.0], [4, 1.0], [1, 0.0]], "c": []})
    assert m.loc["a", "a"] == 1.0 and m.loc["a", "b"] == pytest.approx(2 / 3) and m.loc["b", "a"] == m.loc["a", "b"]
    assert m.loc["a", "c"] != m.loc["a", "c"]  # NaN: c ranked nothing
    assert list(m.index) == ["a", "b", "c"]
