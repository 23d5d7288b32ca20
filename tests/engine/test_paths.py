"""engine.paths: every location's default and env override, the other INFLUENCE_* settings, and no heavy import
(the engine, the store and the app all import it)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine import paths

ENVS = (paths.STORE_ENV, paths.RUNS_ENV, paths.JOBS_ENV, paths.TOKENS_ENV, paths.FEATURES_ENV, paths.BANK_ENV,
        paths.MODEL_CACHE_ENV, paths.STORE_MEMORY_ENV, paths.STORE_THREADS_ENV, paths.READ_ONLY_ENV,
        paths.MAX_UPLOAD_ENV)


@pytest.fixture
def no_env(monkeypatch):
    """Every INFLUENCE_* variable unset."""
    for name in ENVS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_variable_names_are_the_documented_ones():
    assert ENVS == ("INFLUENCE_STORE", "INFLUENCE_RUNS", "INFLUENCE_JOBS", "INFLUENCE_TOKENS", "INFLUENCE_FEATURES",
                    "INFLUENCE_RETRAIN_BANK", "INFLUENCE_CACHE", "INFLUENCE_STORE_MEMORY", "INFLUENCE_STORE_THREADS",
                    "INFLUENCE_READ_ONLY", "INFLUENCE_MAX_UPLOAD_MB")
    for name in ENVS:
        assert re.search(rf"\b{name}\b", paths.__doc__), name  # each is documented in the module docstring


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


def test_locations_beside_the_store_by_default(no_env):
    data = paths.REPO_ROOT / "data"
    assert paths.default_store_path() == paths.DEFAULT_STORE_PATH == data / "influence.duckdb"
    assert paths.default_jobs_dir() == data / "jobs"
    assert paths.default_tokens_dir() == data / "tokens"
    assert paths.default_datasets_dir() == data / "datasets"
    assert paths.worker_log_path() == data / "worker.log"
    assert paths.features_cache_dir() == data / "features"
    assert paths.retrain_bank_dir(data / "runs") == data / "retrain-bank"
    assert paths.model_cache_dir() == data / "cache"
    # a store file named explicitly moves everything that lives beside it
    db = Path("/x/y/db.duckdb")
    assert paths.default_runs_dir(db) == Path("/x/y/runs")
    assert paths.default_jobs_dir(db) == Path("/x/y/jobs")
    assert paths.default_tokens_dir(db) == Path("/x/y/tokens")
    assert paths.default_datasets_dir(str(db)) == Path("/x/y/datasets")
    assert paths.worker_log_path(db) == Path("/x/y/worker.log")
    # and so does INFLUENCE_STORE
    no_env.setenv(paths.STORE_ENV, "/srv/s/influence.duckdb")
    assert paths.default_jobs_dir() == Path("/srv/s/jobs") and paths.default_tokens_dir() == Path("/srv/s/tokens")
    assert paths.default_datasets_dir() == Path("/srv/s/datasets")
    assert paths.worker_log_path() == Path("/srv/s/worker.log")
    assert paths.model_cache_dir() == data / "cache"  # not beside the store: the repository's


def test_locations_beside_the_runs_folder(no_env, tmp_path):
    tmp_path = tmp_path.resolve()  # the features cache's folder is resolved
    runs = tmp_path / "a" / "runs"
    assert paths.features_cache_dir(runs) == tmp_path / "a" / "features"
    assert paths.features_cache_dir(tmp_path / "a" / "b" / ".." / "runs") == tmp_path / "a" / "features"  # resolved
    assert paths.retrain_bank_dir(runs) == tmp_path / "a" / "retrain-bank"
    assert paths.retrain_bank_dir(None) is None  # nothing says where: retrainings are not kept
    no_env.setenv(paths.RUNS_ENV, str(tmp_path / "r" / "runs"))
    assert paths.features_cache_dir() == tmp_path / "r" / "features"


@pytest.mark.parametrize("env, location", [
    (paths.JOBS_ENV, lambda: paths.default_jobs_dir("/x/db.duckdb")),
    (paths.TOKENS_ENV, lambda: paths.default_tokens_dir("/x/db.duckdb")),
    (paths.FEATURES_ENV, lambda: paths.features_cache_dir("/x/runs")),
    (paths.BANK_ENV, lambda: paths.retrain_bank_dir("/x/runs")),
    (paths.MODEL_CACHE_ENV, paths.model_cache_dir),
    (paths.RUNS_ENV, lambda: paths.default_runs_dir("/x/db.duckdb")),
    (paths.STORE_ENV, paths.default_store_path),
])
def test_each_variable_overrides_its_location_and_empty_is_unset(no_env, tmp_path, env, location):
    default = location()
    no_env.setenv(env, str(tmp_path / "here"))
    assert location() == tmp_path / "here"
    no_env.setenv(env, "")
    assert location() == default


def test_home_is_expanded_where_it_always_was(no_env, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    for env, location in ((paths.STORE_ENV, paths.default_store_path), (paths.RUNS_ENV, paths.default_runs_dir),
                          (paths.TOKENS_ENV, paths.default_tokens_dir),
                          (paths.BANK_ENV, lambda: paths.retrain_bank_dir(None))):
        no_env.setenv(env, "~/place")
        assert location() == tmp_path / "place", env


def test_store_settings(no_env):
    assert paths.store_memory_limit() is None and paths.store_threads() is None
    no_env.setenv(paths.STORE_MEMORY_ENV, "2GB")
    no_env.setenv(paths.STORE_THREADS_ENV, "3")
    assert paths.store_memory_limit() == "2GB" and paths.store_threads() == 3
    no_env.setenv(paths.STORE_THREADS_ENV, "0")
    assert paths.store_threads() == 1
    no_env.setenv(paths.STORE_THREADS_ENV, "many")
    with pytest.raises(ValueError):
        paths.store_threads()


@pytest.mark.parametrize("value, on", [("1", True), ("true", True), (" Yes ", True), ("ON", True), ("0", False),
                                       ("no", False), ("", False), (None, False)])
def test_read_only(no_env, value, on):
    if value is not None:
        no_env.setenv(paths.READ_ONLY_ENV, value)
    assert paths.read_only() is on


@pytest.mark.parametrize("value, mb", [(None, 50.0), ("", 50.0), ("7.5", 7.5), ("lots", 50.0)])
def test_max_upload_mb(no_env, value, mb):
    if value is not None:
        no_env.setenv(paths.MAX_UPLOAD_ENV, value)
    assert paths.max_upload_mb() == mb


def test_no_heavy_imports():
    code = ("import sys, engine.paths; "
            "print(sorted(m for m in ('duckdb', 'torch', 'numpy', 'store') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=paths.REPO_ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_public_api():
    import store

    assert callable(store.top_k) and callable(store.rebuild) and store.Store.__name__ == "Store"
    assert issubclass(store.UnknownRunError, LookupError)
    assert set(store.__all__) <= set(dir(store))  # eager imports: every exported name is really there
