"""Fixtures for the AppTest page tests."""

import shutil

import pytest
import streamlit as st


@pytest.fixture
def store_env(monkeypatch, tmp_path, tiny_run):
    """A fresh store path whose runs folder holds the tiny run (the page ingests it on first look); the run name."""
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / tiny_run.name)
    monkeypatch.setenv("INFLUENCE_STORE", str(tmp_path / "s.duckdb"))
    monkeypatch.setenv("INFLUENCE_RUNS", str(runs))
    st.cache_resource.clear()
    return tiny_run.name


@pytest.fixture
def analysis_store_env(monkeypatch, tmp_path, tiny_analysis_run):
    """Like ``store_env`` with the tiny run that has all three analyses; returns its run name."""
    runs = tmp_path / "runs"
    shutil.copytree(tiny_analysis_run, runs / tiny_analysis_run.name)
    monkeypatch.setenv("INFLUENCE_STORE", str(tmp_path / "s.duckdb"))
    monkeypatch.setenv("INFLUENCE_RUNS", str(runs))
    st.cache_resource.clear()
    return tiny_analysis_run.name
