"""Fixtures for the AppTest page tests."""

import shutil

import pytest
import streamlit as st


def _store_env(monkeypatch, tmp_path, run_folder) -> str:
    """A fresh store path whose runs folder holds a copy of ``run_folder`` (the page ingests it on first look)."""
    runs = tmp_path / "runs"
    shutil.copytree(run_folder, runs / run_folder.name)
    monkeypatch.setenv("INFLUENCE_STORE", str(tmp_path / "s.duckdb"))
    monkeypatch.setenv("INFLUENCE_RUNS", str(runs))
    st.cache_resource.clear()
    return run_folder.name


@pytest.fixture
def store_env(monkeypatch, tmp_path, tiny_run):
    """A store whose runs folder holds the tiny run; returns the run name."""
    return _store_env(monkeypatch, tmp_path, tiny_run)


@pytest.fixture
def analysis_store_env(monkeypatch, tmp_path, tiny_analysis_run):
    """Like ``store_env`` with the tiny run that has all three analyses; returns its run name."""
    return _store_env(monkeypatch, tmp_path, tiny_analysis_run)


@pytest.fixture
def jobs_env(monkeypatch, tmp_path):
    """An empty store in ``tmp_path`` (jobs in ``tmp_path/jobs``), writable; returns ``tmp_path``."""
    monkeypatch.setenv("INFLUENCE_STORE", str(tmp_path / "s.duckdb"))
    monkeypatch.delenv("INFLUENCE_JOBS", raising=False)
    monkeypatch.delenv("INFLUENCE_READ_ONLY", raising=False)
    st.cache_resource.clear()
    return tmp_path


@pytest.fixture
def open_page():
    """``open_page(script, **query_params)``: run a page with AppTest and assert it raised and showed no error."""
    from streamlit.testing.v1 import AppTest

    def run(script, **params):
        at = AppTest.from_file(str(script), default_timeout=60)
        for key, value in params.items():
            at.query_params[key] = value
        at.run()
        assert not at.exception, at.exception
        assert not at.error, [e.value for e in at.error]
        return at

    return run
