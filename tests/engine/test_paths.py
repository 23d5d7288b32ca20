"""engine.paths: defaults, env overrides, and no duckdb import (the engine imports it)."""

from pathlib import Path

from engine import paths


def test_defaults(monkeypatch):
    monkeypatch.delenv(paths.STORE_ENV, raising=False)
    monkeypatch.delenv(paths.RUNS_ENV, raising=False)
    assert paths.default_store_path() == paths.REPO_ROOT / "data" / "influence.duckdb"
    assert paths.default_runs_dir() == paths.REPO_ROOT / "data" / "runs"
    assert paths.default_runs_dir("/x/y/db.duckdb") == Path("/x/y/runs")


def test_env_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.STORE_ENV, str(tmp_path / "s" / "a.duckdb"))
    assert paths.default_store_path() == tmp_path / "s" / "a.duckdb"
    assert paths.default_runs_dir() == tmp_path / "s" / "runs"
    monkeypatch.setenv(paths.RUNS_ENV, str(tmp_path / "elsewhere"))
    assert paths.default_runs_dir(tmp_path / "s" / "a.duckdb") == tmp_path / "elsewhere"


def test_lazy_public_api():
    import store

    assert callable(store.top_k) and callable(store.rebuild) and store.Store.__name__ == "Store"
    assert issubclass(store.UnknownRunError, LookupError)
