"""store.db: Store, settings, lock handling across processes, open-or-rebuild."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from store import db
from store.db import Store, StoreOpenError, default_memory_limit, default_threads, open_or_rebuild, open_store
from store.errors import StoreLockedError
from store.queries import runs
from store.schema import SCHEMA_VERSION


def test_store_creates_parent_and_schema(tmp_path):
    path = tmp_path / "a" / "b" / "x.duckdb"
    with Store(path) as s:
        assert path.exists()
        assert s.con.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
        assert "x.duckdb" in repr(s)
    with pytest.raises(Exception):
        s.con.execute("SELECT 1")  # closed


def test_in_memory_store():
    with Store(":memory:") as s:
        assert runs.summary(s)["runs"] == 0


def test_settings(tmp_path, monkeypatch):
    with Store(tmp_path / "x.duckdb", memory_limit="300MB", threads=2) as s:
        limit, threads = s.con.execute(
            "SELECT current_setting('memory_limit'), current_setting('threads')").fetchone()
        assert threads == 2 and limit.endswith("MiB") and 250 < float(limit.split()[0]) < 300
    monkeypatch.setenv("INFLUENCE_STORE_MEMORY", "1GB")
    monkeypatch.setenv("INFLUENCE_STORE_THREADS", "3")
    assert default_memory_limit() == "1GB" and default_threads() == 3
    monkeypatch.delenv("INFLUENCE_STORE_MEMORY")
    monkeypatch.delenv("INFLUENCE_STORE_THREADS")
    assert default_memory_limit().endswith("MB") and 1 <= default_threads() <= 8


def test_cursor_and_ingest_methods(store, runs_dir, make_run):
    make_run(runs_dir, "a")
    assert store.ingest_all(runs_dir) == ["a"]
    assert store.ingest_run(runs_dir / "a") is False
    cur = store.cursor()
    assert runs.methods(cur, "a") == ["datainf", "gradsim"]


def test_ingest_all_defaults_to_runs_next_to_db(db_path, make_run):
    make_run(db_path.parent / "runs", "a")
    with Store(db_path) as s:
        assert s.ingest_all() == ["a"]


def test_corrupt_file_gives_clear_error(db_path):
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"not a database" * 1000)
    with pytest.raises(StoreOpenError, match=r"(?s)influence\.duckdb.*store\.rebuild"):
        Store(db_path)


@pytest.fixture
def holder(db_path):
    """Another process holding the database file open read-write."""
    with Store(db_path):
        pass
    code = textwrap.dedent(f"""
        import duckdb, sys, time
        con = duckdb.connect({str(db_path)!r})
        print("ready", flush=True)
        sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    yield proc
    proc.stdin.close()
    proc.wait(timeout=30)


def test_lock_error_names_file(holder, db_path, runs_dir):

    with pytest.raises(StoreLockedError, match=r"influence\.duckdb.*in use by another process.*2 attempts"):
        open_store(db_path, retries=1, delay_s=0.01)
    with pytest.raises(StoreLockedError, match=str(db_path)):
        Store(db_path, read_only=True)
    with pytest.raises(StoreLockedError):
        db.rebuild(db_path, runs_dir)


def test_open_store_retries_until_free(holder, db_path):
    import threading

    threading.Timer(0.3, holder.stdin.close).start()  # the other process exits shortly
    with open_store(db_path, retries=20, delay_s=0.1) as s:
        assert s.con.execute("SELECT count(*) FROM runs").fetchone()[0] == 0


def test_open_or_rebuild(db_path, make_run):
    runs_dir = db_path.parent / "runs"
    make_run(runs_dir, "a")
    with open_or_rebuild(db_path) as s:  # fresh file: created, then runs ingested
        assert runs.list_runs(s)["run_id"].tolist() == ["a"]
    db_path.write_bytes(b"\0garbage" * 5000)  # corrupt: rebuilt from the run folders
    make_run(runs_dir, "b")
    with open_or_rebuild(db_path, runs_dir) as s:
        assert sorted(runs.list_runs(s)["run_id"]) == ["a", "b"]
        s.con.execute("UPDATE schema_version SET version = 0")
    with open_or_rebuild(db_path, runs_dir) as s:  # other schema version: rebuilt
        assert s.con.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
        assert len(runs.list_runs(s)) == 2
