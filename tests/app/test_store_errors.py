"""AppTest: every page's ``except store.StoreError`` branch. A store another process holds, a corrupt store file,
and a run deleted while its page is open each give a message naming the problem, never a traceback."""

import shutil
import subprocess
import sys

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import store
from engine.paths import REPO_ROOT
from ui import navigation

HOME = REPO_ROOT / "app.py"
PAGES = [REPO_ROOT / p.file for p in navigation.PAGES if p.url_path]  # every page but the home page (app.py)
ANALYSIS = [REPO_ROOT / p.file for p in navigation.NAVIGATION["Analyses"]]
JOBS = REPO_ROOT / "app_pages" / "jobs.py"
BROWSING = [HOME, *(p for p in PAGES if p != JOBS)]  # every page that reads runs from the store

HOLDER = "import sys, store; s = store.Store(sys.argv[1]); print('ready', flush=True); sys.stdin.read()"


def _run(script, **params) -> AppTest:
    at = AppTest.from_file(str(script), default_timeout=60)
    for key, value in params.items():
        at.query_params[key] = str(value)
    at.run()
    assert not at.exception, at.exception
    return at


def _texts(at, kind) -> list[str]:
    return [e.value for e in getattr(at, kind)]


@pytest.fixture
def held_store(monkeypatch, tmp_path, tiny_run):
    """A store file (with the tiny run in its runs folder) that another process holds read-write."""
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / tiny_run.name)
    db = tmp_path / "s.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], cwd=REPO_ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        monkeypatch.setenv("INFLUENCE_STORE", str(db))
        monkeypatch.setenv("INFLUENCE_RUNS", str(runs))
        st.cache_resource.clear()
        yield db
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
        holder.stdout.close()
        st.cache_resource.clear()


@pytest.mark.parametrize("script", BROWSING, ids=lambda p: p.stem)
def test_a_store_held_by_another_process_is_explained_on_every_page(held_store, script):
    at = _run(script)
    errors = _texts(at, "error")
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"The store could not be read: database {held_store} is in use by another "
                                "process"), errors
    assert not at.dataframe and not at.get("plotly_chart")


def test_the_jobs_page_works_while_another_process_holds_the_store(held_store):
    at = _run(JOBS)
    assert not at.error
    # beside the workers panel's "no worker is running" (none runs here), one warning about the store
    (warning,) = [w for w in _texts(at, "warning") if not w.startswith("**No worker is running**")]
    assert warning.startswith(f"Finished runs could not be ingested yet: database {held_store} is in use")
    assert at.get("form_submit_button")  # queueing does not need the database


@pytest.mark.parametrize("script", BROWSING, ids=lambda p: p.stem)
def test_a_corrupt_store_file_is_rebuilt_and_every_page_shows_the_run(monkeypatch, tmp_path, tiny_analysis_run,
                                                                       script):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_analysis_run, runs / tiny_analysis_run.name)
    db = tmp_path / "s.duckdb"
    db.write_bytes(b"not a duckdb file " * 1000)
    monkeypatch.setenv("INFLUENCE_STORE", str(db))
    monkeypatch.setenv("INFLUENCE_RUNS", str(runs))
    st.cache_resource.clear()
    at = _run(script)
    assert not at.error, _texts(at, "error")
    assert at.selectbox(key="run").value == tiny_analysis_run.name
    assert at.dataframe or at.get("plotly_chart")


def _delete_run_on_first(monkeypatch, name):
    """Make ``store.<name>`` delete the run it is asked about, once, just before the real query runs: its run
    folder goes, and its rows (on the page's own connection). The run vanishes between the page's run picker
    and its queries."""
    real = getattr(store, name)
    run_info = store.run_info
    deleted = []

    def query(con, run, *args, **kwargs):
        if not deleted:
            shutil.rmtree(run_info(con, run)["folder"])
            assert store.remove_run(con, run)
            deleted.append(run)
        return real(con, run, *args, **kwargs)

    monkeypatch.setattr(store, name, query)
    return deleted


@pytest.mark.parametrize("script", [p for p in BROWSING if p not in ANALYSIS], ids=lambda p: p.stem)
def test_a_run_deleted_while_its_page_is_open(store_env, monkeypatch, script):
    at = _run(script)  # the page as first opened
    assert not at.error
    deleted = _delete_run_on_first(monkeypatch, "run_info")
    at.run()
    assert not at.exception, at.exception
    assert deleted == [store_env]
    assert _texts(at, "error") == [f"The store could not be read: run {store_env!r} is not in the database "
                                   "(ingest its run folder first)"]


@pytest.mark.parametrize("script", ANALYSIS, ids=lambda p: p.stem)
def test_a_run_deleted_while_its_analysis_page_is_open(analysis_store_env, monkeypatch, script):
    at = _run(script)
    assert not at.error
    _delete_run_on_first(monkeypatch, "analysis_table")
    at.run()
    assert not at.exception, at.exception
    assert _texts(at, "error") == [f"The store could not be read: run {analysis_store_env!r} is not in the "
                                   "database (ingest its run folder first)"]


def test_explore_columns_explain_a_run_deleted_under_them(store_env, monkeypatch):
    """Explore asks the store once per method column (rankings, score distribution, drill-down, dominant
    samples): the run vanishes at the first ranking query, and every later part says so in place."""
    deleted = _delete_run_on_first(monkeypatch, "top_k")
    at = _run(REPO_ROOT / "app_pages" / "explore.py")
    assert deleted == [store_env]
    methods = at.multiselect(key="methods").value
    assert len(methods) == 3
    gone = f"run {store_env!r} is not in the database"
    warnings = _texts(at, "warning")
    for method in methods:
        assert f"No ranking for {method} at checkpoint 2: {gone} (ingest its run folder first)" in warnings
        assert f"No score distribution for {method}: {gone} (ingest its run folder first)" in warnings
    # the drill-down and dominant-sample columns: one warning each per method
    assert sum(w.startswith(gone) for w in warnings) == 2 * len(methods), warnings
    assert not at.error
