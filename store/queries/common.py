"""What every query module shares: the connection, running SQL, checks of names and arguments, the score files
read in place, and the CTEs that rank training samples by the one ranking key (:func:`store.schema.rank_key`).

User values always go in as query parameters; the only text put into SQL here is our own constants."""

from __future__ import annotations

import json
import os
import re

import duckdb
import numpy as np
import pandas as pd

from store.errors import (
    QueryError,
    RunFilesError,
    UnknownCheckpointError,
    UnknownMethodError,
    UnknownRunError,
    UnknownSampleError,
)
from store.schema import rank_key


def connection(con) -> duckdb.DuckDBPyConnection:
    """Accept a connection, a cursor or a Store."""
    return getattr(con, "con", con)


def fetch_df(con, sql: str, params=None) -> pd.DataFrame:
    """The result of ``sql`` as a DataFrame."""
    return connection(con).execute(sql, params if params is not None else []).df()


def fetch_one(con, sql: str, params):
    """The first value of the first row of ``sql``'s result."""
    return connection(con).execute(sql, params).fetchone()[0]


def method_names(con, run: str) -> list[str]:
    """Methods that have scores in ``run``, sorted (unchecked: empty for an unknown run)."""
    rows = connection(con).execute("SELECT DISTINCT method FROM score_sets WHERE run_id = ? ORDER BY method",
                                   [run]).fetchall()
    return [r[0] for r in rows]


def checkpoint_numbers(con, run: str, method: str | None = None) -> list[int]:
    """Checkpoints that have scores in ``run`` (for ``method`` if given), sorted (unchecked: empty when unknown)."""
    rows = connection(con).execute(
        "SELECT DISTINCT checkpoint FROM score_sets WHERE run_id = $run AND ($method IS NULL OR method = $method) "
        "ORDER BY checkpoint",
        {"run": run, "method": method},
    ).fetchall()
    return [int(r[0]) for r in rows]


def require_run(con, run: str) -> None:
    """Raise :class:`UnknownRunError` unless ``run`` is an ingested run."""
    if not isinstance(run, str) or fetch_one(con, "SELECT count(*) FROM runs WHERE run_id = ?", [run]) == 0:
        raise UnknownRunError(run)


def require_method(con, run: str, method: str) -> None:
    """Raise :class:`UnknownMethodError` (naming the run's methods) unless ``run`` has scores of ``method``."""
    if fetch_one(con, "SELECT count(*) FROM score_sets WHERE run_id = ? AND method = ?", [run, method]) == 0:
        raise UnknownMethodError(run, method, method_names(con, run))


def require_scores(con, run: str, method: str, checkpoint: int) -> int:
    """Raise unless ``run`` has scores for ``method`` at ``checkpoint``; return the ranks per test prompt its
    ``topk`` rows hold. One query on the common path; the failure path finds out what is unknown."""
    try:
        ckpt = int(checkpoint)
    except (TypeError, ValueError):
        ckpt = None
    if isinstance(run, str) and isinstance(method, str) and ckpt is not None:
        sql = "SELECT max(top_k) FROM score_sets WHERE run_id = ? AND method = ? AND checkpoint = ?"
        top = fetch_one(con, sql, [run, method, ckpt])
        if top is not None:
            return int(top)
    require_run(con, run)
    require_method(con, run, method)
    raise UnknownCheckpointError(run, method, checkpoint, checkpoint_numbers(con, run, method))


def require_sample(con, run: str, split: str, sample_id: int) -> None:
    """Raise :class:`UnknownSampleError` unless ``run`` has sample ``sample_id`` in ``split``."""
    sql = "SELECT count(*) FROM samples WHERE run_id = ? AND split = ? AND sample_id = ?"
    if fetch_one(con, sql, [run, split, integer(sample_id, "sample_id")]) == 0:
        raise UnknownSampleError(run, split, sample_id)


def score_files(con, run: str, method: str, checkpoint: int) -> list[str]:
    """The score files holding a set's rows, checked to exist: :class:`RunFilesError` naming the run and a missing
    file when the run folder was moved or deleted after it was ingested."""
    sql = "SELECT path FROM score_files WHERE run_id = ? AND method = ? AND checkpoint = ? ORDER BY path"
    rows = connection(con).execute(sql, [run, method, int(checkpoint)]).fetchall()
    paths = [r[0] for r in rows]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise RunFilesError(run, f"its score file {missing[0]} is gone ({len(missing)} of {len(paths)} missing)")
    return paths


def read_sql(con, run: str, sql: str, params: dict, files: list[str] | None = None, numpy: bool = False):
    """Run ``sql`` with the parameters it names (``files``: the score files it reads in place, as ``$files``);
    a DataFrame, or a dict of numpy arrays with ``numpy``. A score file that cannot be read raises
    :class:`RunFilesError` naming the run, not a DuckDB error."""
    if files is not None:
        params = {**params, "files": files}
    used = set(re.findall(r"\$(\w+)", sql))
    params = {name: value for name, value in params.items() if name in used}
    try:
        result = connection(con).execute(sql, params)
        return result.fetchnumpy() if numpy else result.df()
    except (duckdb.IOException, duckdb.InvalidInputException) as e:
        if files is None:
            raise
        raise RunFilesError(run, f"its score files could not be read ({type(e).__name__}: {e})") from e


def sample_ids(con, run: str, split: str) -> np.ndarray:
    """The sample ids of one split, sorted: 0..n-1 (ingest refuses a run whose ids are not)."""
    n = fetch_one(con, "SELECT count(*) FROM samples WHERE run_id = ? AND split = ?", [run, split])
    return np.arange(n, dtype=np.int64)


def integer(value, name: str) -> int:
    """``value`` as an int; a :class:`QueryError` naming the argument if it is not a whole number."""
    try:
        v = int(value)
    except (TypeError, ValueError, OverflowError):
        raise QueryError(f"{name} must be an integer, got {value!r}") from None
    if v != value and str(v) != str(value).strip():
        raise QueryError(f"{name} must be an integer, got {value!r}")
    return v


def positive(value, name: str) -> int:
    """``value`` as an int >= 1; a :class:`QueryError` naming the argument otherwise."""
    try:
        v = int(value)
    except (TypeError, ValueError, OverflowError):
        v = 0
    if v < 1 or v != value:
        raise QueryError(f"{name} must be a positive integer, got {value!r}")
    return v


def optional_int(value, name: str = "checkpoint") -> int | None:
    """:func:`integer`, or None for None."""
    return None if value is None else integer(value, name)


def from_json(text, default):
    """The JSON text of a column parsed; ``default`` for NULL (None or NaN)."""
    return default if text is None or (isinstance(text, float) and np.isnan(text)) else json.loads(text)


def plain(value):
    """numpy/pandas scalars -> Python values (None for NaN/NaT)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value.item() if hasattr(value, "item") else value


# The score rows of one (method, checkpoint) read in place from its files ``$files``; filters go on the raw file
# columns, so DuckDB prunes row groups by their statistics (a merged file's row group holds whole prompts).
IN_PLACE_SQL = ("(SELECT CAST(test_id AS INTEGER) AS test_id, CAST(train_id AS INTEGER) AS train_id, "
                "CAST(score AS FLOAT) AS score FROM read_parquet($files) "
                "WHERE method = $method AND checkpoint = $ckpt{where})")


def in_place(where: str = "") -> str:
    """The in-place relation, with more conditions on the raw columns (``where``: constant text + parameters)."""
    return IN_PLACE_SQL.format(where=where)


def todo_one() -> str:
    """CTE ``todo`` of one score set (``$run``, ``$method``, ``$ckpt``) at ``$k``."""
    return ("todo AS (SELECT CAST($run AS VARCHAR) AS run_id, CAST($method AS VARCHAR) AS method, "
            "CAST($ckpt AS INTEGER) AS checkpoint, CAST($k AS INTEGER) AS k)")


def ranked_cte(in_table: bool) -> str:
    """CTE ``ranked`` (run_id, method, checkpoint, test_id, k, train_id, rnk): the top k training samples of every
    test prompt of the score sets in ``todo`` (run_id, method, checkpoint, k), by the one ranking key.

    ``in_table``: read ``topk`` (every set of ``todo`` has k <= its stored ranks). Otherwise ``todo`` is ONE set
    whose score files are ``$files``, ranked in place (``max_by`` with n: a heap of k per test prompt)."""
    if in_table:
        return """ranked AS (
    SELECT t.run_id, t.method, t.checkpoint, tk.test_id, t.k, tk.train_id, tk.rank AS rnk
    FROM todo t JOIN topk tk ON tk.run_id = t.run_id AND tk.method = t.method AND tk.checkpoint = t.checkpoint
    WHERE tk.rank <= t.k
)"""
    return f"""tops AS (
    SELECT test_id, max_by(train_id, {rank_key()}, $k) AS top FROM {in_place()} GROUP BY test_id
),
ranked AS (
    SELECT t.run_id, t.method, t.checkpoint, tops.test_id, t.k, unnest(tops.top) AS train_id,
           generate_subscripts(tops.top, 1) AS rnk
    FROM tops, todo t
)"""
