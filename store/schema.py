"""The DuckDB schema: the small run-folder tables copied in (plus ``run_id``), ``runs``, ``score_sets``,
``score_files`` and ``topk``; and the Ask page's saved queries (``asks``, ``ask_results``), the one thing not
rebuilt from run folders. The score matrices are NOT copied: they stay in the run folder's Parquet and are
read in place (``read_parquet`` on the files of the run folder ``runs.folder`` listed in ``score_files``).

Every table is keyed by ``run_id`` (the run folder's name). The copied tables are described once in
:data:`PARQUET_TABLES` (column name -> SQL type, from ``engine.runfolder.runformat``); :mod:`store.ingest` builds its
``INSERT ... SELECT ... FROM read_parquet(?)`` statements from the same description. ``topk`` holds, per (run,
method, checkpoint, test prompt), the :data:`TOP_K` best training samples (the ranking of :func:`rank_key`),
computed at ingest from the Parquet: what the pages read most is answered without touching the big files. No
primary keys or indexes: ART indexes slow bulk loads, and ``topk`` is loaded sorted by (run_id, method,
checkpoint, test_id, rank) so that DuckDB's automatic min/max zonemaps make per-prompt lookups fast.
"""

from __future__ import annotations

import duckdb

from engine.runfolder import runformat
from store.errors import SchemaVersionError

SCHEMA_VERSION = 6  # 2: the analysis tables; 3: bootstrap intervals in metrics; 4: noise floor, LDS with interval,
#                      counterfactual, fair iHVP reference, retrain bank; 5: self_influence, checks; 6: scores read
#                      in place from the run folders, topk, test_agreement

TOP_K = 200  # training samples kept per (run, method, checkpoint, test prompt) in ``topk`` (fewer if n_train is)

# Run-folder tables read in place from the run folder, never copied into the database.
IN_PLACE_TABLES = ("scores",)
# every run-folder table -> ({column: sql type} as in the Parquet file, sort key): from the one declaration of
# the run-folder format (engine.runfolder.runformat), which imports neither torch nor DuckDB.
FILE_TABLES: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
    name: (t.sql_columns(), t.key) for name, t in runformat.TABLES.items()}
# the ones copied into DuckDB tables of the same name, loaded sorted by their key
PARQUET_TABLES = {name: v for name, v in FILE_TABLES.items() if name not in IN_PLACE_TABLES}
ANALYSIS_TABLES = runformat.ANALYSIS_TABLES  # empty for runs without analysis stages
STAGE_TABLES = runformat.STAGE_TABLES  # empty for runs without the optional stage that writes them
# Key columns that may hold NULL (ihvp_error.iterations is NULL for methods run with their own defaults).
NULLABLE_KEYS = {(name, c) for name, t in runformat.TABLES.items() for c in t.nullable_keys}
# Columns older run folders may lack (loaded as NULL).
OPTIONAL_COLUMNS = {name: set(t.optional) for name, t in runformat.TABLES.items()}


def rank_key(alias: str = "") -> str:
    """The ranking rule of ``engine.evaluation.metrics.ranking`` as ONE SQL sort key over ``score`` and ``train_id``
    (constant text, never user data): larger key = ranked higher. ``(NOT isnan(score), score, -train_id)``: a real
    score above NaN, then the score, then the lower train_id. Used as ``ORDER BY key DESC``, as the ``max_by`` key
    (``topk`` at ingest, rankings in place in :mod:`store.queries`) and compared with ``>``. ``alias``: the
    relation whose columns it names (a function, not a constant, for queries that compare two relations' keys)."""
    p = f"{alias}." if alias else ""
    return f"(NOT isnan({p}score), {p}score, -{p}train_id)"

RUNS_DDL = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY,      -- the run folder's name
    kind VARCHAR,                    -- "pipeline" | "imported"
    model VARCHAR,
    task VARCHAR,
    spec_json VARCHAR,
    spec_hash VARCHAR,
    status VARCHAR,
    created TIMESTAMP,               -- UTC
    n_train INTEGER,
    n_test INTEGER,
    labels_json VARCHAR,
    k_default INTEGER,
    versions_json VARCHAR,
    folder VARCHAR,
    manifest_sha256 VARCHAR NOT NULL,
    ingested_at TIMESTAMP            -- UTC
)
"""

# One row per (run, method, checkpoint) that has scores: makes methods()/checkpoints()/validation cheap.
SCORE_SETS_DDL = """
CREATE TABLE IF NOT EXISTS score_sets (
    run_id VARCHAR NOT NULL,
    method VARCHAR NOT NULL,
    checkpoint INTEGER NOT NULL,
    n_rows BIGINT,
    top_k INTEGER NOT NULL           -- ranks kept per test prompt in topk: min(TOP_K, training samples scored)
)
"""

# Which score files (absolute paths inside runs.folder, as ingested) hold the rows of a (run, method, checkpoint).
SCORE_FILES_DDL = """
CREATE TABLE IF NOT EXISTS score_files (
    run_id VARCHAR NOT NULL,
    method VARCHAR NOT NULL,
    checkpoint INTEGER NOT NULL,
    path VARCHAR NOT NULL,
    n_rows BIGINT
)
"""

# The best score_sets.top_k training samples per test prompt, rank 1 first (ties: lowest train_id; NaN last).
TOPK_DDL = """
CREATE TABLE IF NOT EXISTS topk (
    run_id VARCHAR NOT NULL,
    method VARCHAR NOT NULL,
    checkpoint INTEGER NOT NULL,
    test_id INTEGER NOT NULL,
    rank INTEGER NOT NULL,
    train_id INTEGER NOT NULL,
    score FLOAT
)
"""

VERSION_DDL = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"

# Saved queries of the Ask page (store.queries.asks). Not in run folders and not per-run rows of RUN_TABLES: an
# ingest never touches them, and store.db.rebuild copies them from the old file into the new one. New tables in an
# existing file appear at its next read-write open (CREATE TABLE IF NOT EXISTS): no schema-version bump needed.
ASKS_DDL = """
CREATE TABLE IF NOT EXISTS asks (
    ask_id VARCHAR PRIMARY KEY,      -- random, URL-safe (the Ask page's ?q=)
    run_id VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,           -- "prompt" (ids are training samples) | "candidate" (ids are test prompts)
    prompt VARCHAR NOT NULL,
    response VARCHAR NOT NULL,       -- given, or the model's answer when generated
    generated BOOLEAN NOT NULL,
    methods_json VARCHAR NOT NULL,   -- the methods answered, in the order asked
    k INTEGER NOT NULL,
    seconds DOUBLE,                  -- request to answer, as the server timed it
    cannot_json VARCHAR NOT NULL,    -- {method: why it cannot answer}
    notes_json VARCHAR NOT NULL,     -- [what the user should know, e.g. truncation]
    created TIMESTAMP NOT NULL       -- UTC
)
"""

ASK_RESULTS_DDL = """
CREATE TABLE IF NOT EXISTS ask_results (
    ask_id VARCHAR NOT NULL,
    method VARCHAR NOT NULL,
    rank INTEGER NOT NULL,           -- 1 = best
    sample_id INTEGER NOT NULL,      -- a training sample (kind prompt) or a test prompt (kind candidate)
    score DOUBLE
)
"""
ASK_TABLES = ("asks", "ask_results")  # kept across rebuilds (store.db.rebuild), in the order they are copied

# Tables holding per-run rows, in the order ingest deletes/inserts them.
RUN_TABLES = ("runs", "score_sets", "score_files", "topk", *PARQUET_TABLES)


def table_ddl(table: str) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for one Parquet-backed table (``run_id`` first; key columns NOT NULL)."""
    columns, key = PARQUET_TABLES[table]
    cols = ",\n    ".join(f"{name} {typ}{' NOT NULL' if name in key and (table, name) not in NULLABLE_KEYS else ''}"
                           for name, typ in columns.items())
    return f"CREATE TABLE IF NOT EXISTS {table} (\n    run_id VARCHAR NOT NULL,\n    {cols}\n)"


def stored_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The schema version recorded in the database, or None for an empty database."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_name = 'schema_version' AND table_schema = current_schema() "
        "AND table_catalog = current_database()"
    ).fetchone()[0]
    if not exists:
        return None
    row = con.execute("SELECT max(version) FROM schema_version").fetchone()
    return None if row is None else row[0]


def ensure_schema(con: duckdb.DuckDBPyConnection, path: str = "") -> None:
    """Create every table if missing (read-write connections); raise if the file has another version."""
    version = stored_version(con)
    if version is not None and version != SCHEMA_VERSION:
        raise _version_error(path, version)
    con.execute("BEGIN TRANSACTION")
    try:
        for ddl in (VERSION_DDL, RUNS_DDL, SCORE_SETS_DDL, SCORE_FILES_DDL, TOPK_DDL, ASKS_DDL,
                    ASK_RESULTS_DDL, *(table_ddl(t) for t in PARQUET_TABLES)):
            con.execute(ddl)
        if version is None:
            con.execute("DELETE FROM schema_version")
            con.execute("INSERT INTO schema_version VALUES (?)", [SCHEMA_VERSION])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def check_schema(con: duckdb.DuckDBPyConnection, path: str = "") -> None:
    """For read-only connections: raise unless the file holds this schema version."""
    version = stored_version(con)
    if version != SCHEMA_VERSION:
        raise _version_error(path, version)


def _version_error(path: str, version: int | None) -> SchemaVersionError:
    found = "no influence-explorer schema" if version is None else f"schema version {version}"
    return SchemaVersionError(
        f"database {path or '(in memory)'} has {found}, this code expects version {SCHEMA_VERSION}; "
        "rebuild it from the run folders with store.rebuild(db_path, runs_dir)"
    )
