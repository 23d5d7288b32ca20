"""Where everything lives, and every ``INFLUENCE_*`` setting: the one module that reads them.

The variables and their defaults are a user-facing contract (the README and the Dockerfile document them)::

    INFLUENCE_STORE           the DuckDB file                 <repo>/data/influence.duckdb
    INFLUENCE_RUNS            the run folders                 <store dir>/runs
    INFLUENCE_JOBS            the job queue                   <store dir>/jobs
    INFLUENCE_TOKENS          token-level attributions        <store dir>/tokens
    (no variable)             uploaded datasets               <store dir>/datasets
    (no variable)             the worker's log (make run)     <store dir>/worker.log
    INFLUENCE_FEATURES        the feature cache               features/ beside the runs folder
    INFLUENCE_RETRAIN_BANK    the retrain bank                retrain-bank/ beside the runs folder
    INFLUENCE_CACHE           converted models                <repo>/data/cache
    INFLUENCE_STORE_MEMORY    DuckDB memory limit ("2GB")     (store.db: 30 % of the memory available)
    INFLUENCE_STORE_THREADS   DuckDB threads                  (store.db: the CPUs available, at most 8)
    INFLUENCE_READ_ONLY       a read-only deployment          off
    INFLUENCE_MAX_UPLOAD_MB   the upload limit                50

A variable set to the empty string counts as unset. Pure standard library: the engine, the store and the app all
import it (no torch, no duckdb).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STORE_PATH = REPO_ROOT / "data" / "influence.duckdb"
DEFAULT_MODEL_CACHE = REPO_ROOT / "data" / "cache"
DEFAULT_MAX_UPLOAD_MB = 50

STORE_ENV = "INFLUENCE_STORE"
RUNS_ENV = "INFLUENCE_RUNS"
JOBS_ENV = "INFLUENCE_JOBS"
TOKENS_ENV = "INFLUENCE_TOKENS"
FEATURES_ENV = "INFLUENCE_FEATURES"
BANK_ENV = "INFLUENCE_RETRAIN_BANK"
MODEL_CACHE_ENV = "INFLUENCE_CACHE"
STORE_MEMORY_ENV = "INFLUENCE_STORE_MEMORY"
STORE_THREADS_ENV = "INFLUENCE_STORE_THREADS"
READ_ONLY_ENV = "INFLUENCE_READ_ONLY"
MAX_UPLOAD_ENV = "INFLUENCE_MAX_UPLOAD_MB"


def _env(name: str) -> str | None:
    """The variable's value; None when it is unset or empty."""
    return os.environ.get(name) or None


def default_store_path() -> Path:
    """The DuckDB file: ``$INFLUENCE_STORE``, else ``<repo>/data/influence.duckdb``."""
    env = _env(STORE_ENV)
    return Path(env).expanduser() if env else DEFAULT_STORE_PATH


def _beside_store(store_path: str | os.PathLike | None, name: str) -> Path:
    """``name`` in the folder of the store file (``store_path``, else :func:`default_store_path`)."""
    return Path(store_path or default_store_path()).parent / name


def default_runs_dir(store_path: str | os.PathLike | None = None) -> Path:
    """The run folders: ``$INFLUENCE_RUNS``, else ``runs/`` next to the store file."""
    env = _env(RUNS_ENV)
    return Path(env).expanduser() if env else _beside_store(store_path, "runs")


def default_jobs_dir(store_path: str | os.PathLike | None = None) -> Path:
    """The job queue: ``$INFLUENCE_JOBS``, else ``jobs/`` next to the store file."""
    env = _env(JOBS_ENV)
    return Path(env) if env else _beside_store(store_path, "jobs")


def default_tokens_dir(store_path: str | os.PathLike | None = None) -> Path:
    """Token-level attributions: ``$INFLUENCE_TOKENS``, else ``tokens/`` next to the store file."""
    env = _env(TOKENS_ENV)
    return Path(env).expanduser() if env else _beside_store(store_path, "tokens")


def default_datasets_dir(store_path: str | os.PathLike | None = None) -> Path:
    """Uploaded and saved datasets: ``datasets/`` next to the store file."""
    return _beside_store(store_path, "datasets")


def worker_log_path(store_path: str | os.PathLike | None = None) -> Path:
    """The log of the worker that ``make run`` starts: ``worker.log`` next to the store file."""
    return _beside_store(store_path, "worker.log")


def features_cache_dir(runs_dir: str | os.PathLike | None = None) -> Path:
    """The feature cache: ``$INFLUENCE_FEATURES``, else ``features/`` beside the runs folder (``runs_dir``, else
    :func:`default_runs_dir`; ``data/features`` by default): not inside it, which holds run folders only."""
    env = _env(FEATURES_ENV)
    if env:
        return Path(env)
    return Path(runs_dir if runs_dir is not None else default_runs_dir()).resolve().parent / "features"


def query_server_file(runs_dir: str | os.PathLike | None = None) -> Path:
    """Where the query server that serves ``runs_dir`` (else :func:`default_runs_dir`) says how to reach it:
    ``query-server.json`` beside the runs folder (its log: ``query-server.log`` there)."""
    return Path(runs_dir if runs_dir is not None else default_runs_dir()).resolve().parent / "query-server.json"


def retrain_bank_dir(runs_dir: str | os.PathLike | None) -> Path | None:
    """The retrain bank when the spec does not name one: ``$INFLUENCE_RETRAIN_BANK``, else ``retrain-bank/`` beside
    ``runs_dir``; None when neither says where (retrainings are then not kept)."""
    env = _env(BANK_ENV)
    if env:
        return Path(env).expanduser()
    return Path(runs_dir).parent / "retrain-bank" if runs_dir is not None else None


def model_cache_dir() -> Path:
    """Where converted models live: ``$INFLUENCE_CACHE``, else ``<repo>/data/cache``."""
    env = _env(MODEL_CACHE_ENV)
    return Path(env) if env else DEFAULT_MODEL_CACHE


def store_memory_limit() -> str | None:
    """``$INFLUENCE_STORE_MEMORY`` (a DuckDB size such as ``2GB``); None when unset (``store.db`` decides)."""
    return _env(STORE_MEMORY_ENV)


def store_threads() -> int | None:
    """``$INFLUENCE_STORE_THREADS`` as an int >= 1; None when unset (``store.db`` decides). ValueError when it is
    not an integer."""
    env = _env(STORE_THREADS_ENV)
    return max(1, int(env)) if env else None


def read_only() -> bool:
    """``$INFLUENCE_READ_ONLY`` is ``1``, ``true``, ``yes`` or ``on`` (any case): a read-only deployment."""
    return (_env(READ_ONLY_ENV) or "").strip().lower() in ("1", "true", "yes", "on")


def max_upload_mb() -> float:
    """``$INFLUENCE_MAX_UPLOAD_MB``, else (unset or not a number) :data:`DEFAULT_MAX_UPLOAD_MB`."""
    try:
        return float(_env(MAX_UPLOAD_ENV) or DEFAULT_MAX_UPLOAD_MB)
    except ValueError:
        return float(DEFAULT_MAX_UPLOAD_MB)
