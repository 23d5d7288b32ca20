"""AppTest: the home page over an empty store and over a store holding the tiny run."""

import shutil

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from store.paths import REPO_ROOT


def _app(monkeypatch, db_path):
    monkeypatch.setenv("INFLUENCE_STORE", str(db_path))
    monkeypatch.setenv("INFLUENCE_RUNS", str(db_path.parent / "runs"))
    st.cache_resource.clear()
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def test_empty_store_explains_and_offers_the_demo(monkeypatch, tmp_path):
    at = _app(monkeypatch, tmp_path / "s.duckdb")
    assert any("store is empty" in i.value for i in at.info)
    assert any("engine demo" in c.value for c in at.code)
    assert [m.value for m in at.metric][:1] == ["0"]


def test_store_with_a_run_shows_runs_and_leaderboard(monkeypatch, tmp_path, tiny_run):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / tiny_run.name)
    at = _app(monkeypatch, tmp_path / "s.duckdb")  # the app ingests the run folder it finds
    assert at.metric[0].value == "1"
    assert at.selectbox(key="run").value == tiny_run.name
    board = at.dataframe[1].value
    assert {"gradsim", "datainf", "lissa", "exact", "repsim"} <= set(board.method)
    assert any("chance level" in m.value for m in at.markdown)


def test_corrupt_store_is_rebuilt_from_run_folders(monkeypatch, tmp_path, tiny_run):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / tiny_run.name)
    db = tmp_path / "s.duckdb"
    db.write_bytes(b"this is not a duckdb file" * 100)
    at = _app(monkeypatch, db)
    assert at.metric[0].value == "1"


@pytest.mark.slow
def test_demo_button_runs_the_demo_in_a_separate_process(monkeypatch, tmp_path):
    import time

    from ui import demo_job

    db = tmp_path / "s.duckdb"
    at = _app(monkeypatch, db)
    at.radio(key="demo_model").set_value("tiny").run()
    at.radio(key="demo_analyses").set_value("ihvp,convergence").run()
    at.button(key="run_demo").click().run()
    assert demo_job.running_pid(db) is not None or (tmp_path / "runs" / "demo-tiny").is_dir()
    deadline = time.time() + 240
    while demo_job.running_pid(db) is not None and time.time() < deadline:
        time.sleep(1)
    assert (tmp_path / "runs" / "demo-tiny" / "manifest.json").is_file(), (tmp_path / "demo.log").read_text()
    at.run()
    assert at.metric[0].value == "1"
    assert at.selectbox(key="run").value == "demo-tiny"
    import json

    manifest = json.loads((tmp_path / "runs" / "demo-tiny" / "manifest.json").read_text())
    assert manifest["analyses"] == ["ihvp", "convergence"]
