"""store.schema: tables, version table, version checks."""

import duckdb
import pytest

from store.db import Store
from store.errors import SchemaVersionError
from store.schema import PARQUET_TABLES, SCHEMA_VERSION, ensure_schema, rank_key, stored_version


def _columns(con, table):
    return [r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position", [table]
    ).fetchall()]


def test_tables_and_columns():
    con = duckdb.connect()
    ensure_schema(con)
    ensure_schema(con)  # idempotent
    assert stored_version(con) == SCHEMA_VERSION
    assert con.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 1
    for table, (cols, _) in PARQUET_TABLES.items():
        assert _columns(con, table) == ["run_id", *cols]
    assert "scores" not in PARQUET_TABLES and _columns(con, "scores") == []  # read in place, never copied
    assert _columns(con, "topk") == ["run_id", "method", "checkpoint", "test_id", "rank", "train_id", "score"]
    assert _columns(con, "score_files") == ["run_id", "method", "checkpoint", "path", "n_rows"]
    assert "manifest_sha256" in _columns(con, "runs") and "spec_hash" in _columns(con, "runs")
    types = dict(con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'topk'").fetchall())
    assert types["score"] == "FLOAT" and types["test_id"] == "INTEGER" and types["rank"] == "INTEGER"


def test_version_mismatch(db_path):
    with Store(db_path) as s:
        s.con.execute("UPDATE schema_version SET version = 999")
    with pytest.raises(SchemaVersionError, match="999.*rebuild"):
        Store(db_path)
    with pytest.raises(SchemaVersionError, match=str(db_path)):
        Store(db_path, read_only=True)


def test_read_only_open(db_path):
    with Store(db_path):
        pass
    with Store(db_path, read_only=True) as s:
        assert s.con.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
        with pytest.raises(duckdb.Error):
            s.con.execute("DELETE FROM runs")


def test_rank_key_is_the_ranking_rule():
    """Score descending, ties -> the lower train_id, NaN last; as ORDER BY key DESC and compared across aliases."""
    con = duckdb.connect()
    con.execute("CREATE TABLE s AS SELECT * FROM (VALUES (0, 1.0), (1, 'NaN'::DOUBLE), (2, 3.0), (3, 1.0), (4, -2.0))"
                " t(train_id, score)")
    order = [r[0] for r in con.execute(f"SELECT train_id FROM s ORDER BY {rank_key()} DESC").fetchall()]
    assert order == [2, 0, 3, 4, 1]
    above = con.execute(f"SELECT count(*) FROM s a, s b WHERE b.train_id = 3 AND {rank_key('a')} > {rank_key('b')}")
    assert above.fetchone()[0] == 2  # train 2 (higher score) and train 0 (same score, lower id)
    assert rank_key("x") == "(NOT isnan(x.score), x.score, -x.train_id)"
