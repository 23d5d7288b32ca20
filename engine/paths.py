"""Default locations of the database file and the run folders.

No duckdb import here: the engine (which never opens the database) imports these helpers to know where to
write run folders.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
STORE_ENV = "INFLUENCE_STORE"
RUNS_ENV = "INFLUENCE_RUNS"


def default_store_path() -> Path:
    """The DuckDB file: env ``INFLUENCE_STORE``, else ``<repo>/data/influence.duckdb``."""
    env = os.environ.get(STORE_ENV)
    return Path(env).expanduser() if env else REPO_ROOT / "data" / "influence.duckdb"


def default_runs_dir(store_path: str | os.PathLike | None = None) -> Path:
    """The run folders: env ``INFLUENCE_RUNS``, else ``<directory of the store file>/runs``."""
    env = os.environ.get(RUNS_ENV)
    if env:
        return Path(env).expanduser()
    store = Path(store_path) if store_path is not None else default_store_path()
    return store.parent / "runs"
