"""store.ingest: idempotence, re-runs, incomplete folders, atomic failure, rebuild."""

from __future__ import annotations

import hashlib
import json
import shutil

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from store import db, ingest
from store.db import Store
from store.errors import IngestError, QueryError
from store.queries import metrics, runs, samples, scores
from store.schema import RUN_TABLES, STAGE_TABLES, TOP_K

N_TABLES = RUN_TABLES  # runs, score_sets, score_files, topk, samples, metrics, label_metrics, agreement, ...


def counts(con, run: str | None = None) -> dict[str, int]:
    """Row count of every per-run table (for one run, or all)."""
    return {
        t: con.execute(f"SELECT count(*) FROM {t} WHERE ? IS NULL OR run_id = ?", [run, run]).fetchone()[0]
        for t in N_TABLES
    }


def dump(con) -> dict[str, list]:
    """Every row of every per-run table, sorted, without the columns that legitimately differ (time, path)."""
    out = {}
    for t in N_TABLES:
        cols = [r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position", [t]
        ).fetchall() if r[0] not in ("ingested_at",)]
        out[t] = sorted(con.execute(f"SELECT {', '.join(cols)} FROM {t}").fetchall(), key=repr)
    return out


def test_ingest_is_idempotent(store, runs_dir, make_run):
    d = make_run(runs_dir, "r1")
    assert ingest.ingest_run(store.con, d.folder) is True
    first = counts(store.con)
    assert ingest.ingest_run(store.con, d.folder) is False
    assert ingest.ingest_all(store.con, runs_dir) == []
    assert counts(store.con) == first
    # scores stay in the run folder: the database keeps where they are and each prompt's top k (here: all 12)
    assert first["topk"] == 2 * 2 * d.n_test * min(TOP_K, d.n_train)
    assert store.con.execute("SELECT sum(n_rows) FROM score_sets").fetchone()[0] == 2 * 2 * d.n_train * d.n_test
    assert first["score_files"] == 2 * 2 * 2  # two shard files per (method, checkpoint), one set each
    assert first["samples"] == d.n_train + d.n_test
    assert first["runs"] == 1 and first["score_sets"] == 4 and first["metrics"] == 4
    # the synthetic run has the format of folders written before per-test agreement: no test_agreement.parquet
    assert all(n > 0 for t, n in first.items() if t not in STAGE_TABLES and t != "test_agreement")
    assert first["test_agreement"] == 0
    assert all(first[t] == 0 for t in STAGE_TABLES)  # this run has no analysis, self-influence or check stages


def test_topk_loaded_sorted_and_the_scores_not_copied(store, runs_dir, make_run):
    make_run(runs_dir, "r1", shards=3)
    store.ingest_all(runs_dir)
    rows = store.con.execute("SELECT method, checkpoint, test_id, rank FROM topk").fetchall()
    assert rows == sorted(rows)  # the physical order that lets zonemaps skip to one prompt
    tables = {r[0] for r in store.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert "scores" not in tables


@pytest.mark.parametrize("top_k", [1, 4, 12, 50])
def test_topk_is_each_prompts_best_training_samples(store, runs_dir, make_run, ref, top_k):
    """topk holds, per (method, checkpoint, test prompt), the min(top_k, n_train) best training samples in rank
    order, with their scores, by the ranking rule (ties -> lower train id; NaN last)."""
    d = make_run(runs_dir, "r1", n_train=12, n_test=4, ties=True, nans=0.1, seed=9)
    assert ingest.ingest_run(store.con, d.folder, top_k=top_k)
    assert store.con.execute("SELECT DISTINCT top_k FROM score_sets").fetchall() == [(top_k,)]
    for (method, ckpt), S in d.scores.items():
        order = ref.rank_order(np.where(np.isnan(S), -np.inf, S))  # NaN last, and lower index first among NaNs
        for j in range(d.n_test):
            got = store.con.execute("SELECT rank, train_id, score FROM topk WHERE method = ? AND checkpoint = ? "
                                    "AND test_id = ? ORDER BY rank", [method, ckpt, j]).fetchall()
            want = order[j, :top_k]
            assert [r[0] for r in got] == list(range(1, len(want) + 1))
            assert [r[1] for r in got] == want.tolist()
            np.testing.assert_array_equal(np.array([r[2] for r in got], np.float32), S[j, want])


def test_bad_top_k_is_refused(store, runs_dir, make_run):
    d = make_run(runs_dir, "r1")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(QueryError, match="top_k must be a positive integer"):
            ingest.ingest_run(store.con, d.folder, top_k=bad)
    assert counts(store.con) == dict.fromkeys(N_TABLES, 0)


def test_reingest_after_rerun_replaces_rows(store, runs_dir, make_run):
    make_run(runs_dir, "r1", n_train=12, methods=("gradsim", "datainf"), seed=1)
    store.ingest_all(runs_dir)
    sha1 = store.con.execute("SELECT manifest_sha256 FROM runs").fetchone()[0]
    d2 = make_run(runs_dir, "r1", n_train=9, methods=("repsim",), checkpoints=(3,), seed=2)
    assert store.ingest_all(runs_dir) == ["r1"]
    c = counts(store.con, "r1")
    assert c["runs"] == 1 and c["topk"] == 9 * d2.n_test and c["samples"] == 9 + d2.n_test
    assert runs.methods(store.con, "r1") == ["repsim"]
    assert store.con.execute("SELECT manifest_sha256 FROM runs").fetchone()[0] != sha1
    np.testing.assert_array_equal(scores.score_matrix(store.con, "r1", "repsim", 3), d2.scores[("repsim", 3)])


def test_other_runs_untouched(store, runs_dir, make_run):
    make_run(runs_dir, "a", seed=1)
    make_run(runs_dir, "b", seed=2)
    store.ingest_all(runs_dir)
    before = counts(store.con, "a")
    make_run(runs_dir, "b", seed=3, n_train=6)
    store.ingest_all(runs_dir)
    assert counts(store.con, "a") == before


def _rewrite_manifest(folder, **changes):
    path = folder / "manifest.json"
    m = json.loads(path.read_text())
    m.update(changes)
    path.write_text(json.dumps(m))


def test_incomplete_folders_are_not_ingested(store, runs_dir, tmp_path, make_run):
    make_run(runs_dir, "good")
    # a killed run: only the hidden temp folder is left
    killed = make_run(tmp_path / "scratch", "killed").folder
    shutil.copytree(killed, runs_dir / ".killed.tmp-123")
    # no manifest
    shutil.copytree(killed, runs_dir / "nomanifest")
    (runs_dir / "nomanifest" / "manifest.json").unlink()
    # status not complete
    shutil.copytree(killed, runs_dir / "running")
    _rewrite_manifest(runs_dir / "running", status="running")
    # a file's row count differs from the manifest
    shutil.copytree(killed, runs_dir / "mismatch")
    pq.write_table(pq.read_table(runs_dir / "mismatch" / "samples.parquet").slice(0, 3),
                   runs_dir / "mismatch" / "samples.parquet")
    # a truncated (unreadable) Parquet file
    shutil.copytree(killed, runs_dir / "truncated")
    f = runs_dir / "truncated" / "metrics.parquet"
    f.write_bytes(f.read_bytes()[:50])

    assert store.ingest_all(runs_dir) == ["good"]
    for name in (".killed.tmp-123", "nomanifest", "running", "mismatch", "truncated"):
        assert ingest.ingest_run(store.con, runs_dir / name) is False
        assert counts(store.con, name) == dict.fromkeys(N_TABLES, 0)
    assert ingest.ingest_run(store.con, runs_dir / "does-not-exist") is False


def _bad_scores_table(n=4):
    return pa.table({
        "method": pa.array(["gradsim"] * n), "checkpoint": pa.array([1] * n, pa.int32()),
        "test_id": pa.array([0] * n, pa.int32()), "train_id": pa.array(range(n), pa.int32()),
        "score": pa.array(["not-a-number"] * n),
    })


def test_corrupt_scores_file_leaves_nothing(store, runs_dir, make_run):
    d = make_run(runs_dir, "bad", shards=3, extra_files={"scores/zz-corrupt.parquet": _bad_scores_table()})
    with pytest.raises(IngestError, match=r"'bad'.*zz-corrupt\.parquet") as e:
        ingest.ingest_run(store.con, d.folder)
    assert "scores" in str(e.value)
    assert counts(store.con) == dict.fromkeys(N_TABLES, 0)


def test_failed_reingest_keeps_previous_version(store, runs_dir, make_run):
    make_run(runs_dir, "r1", seed=1)
    store.ingest_all(runs_dir)
    before = dump(store.con)
    make_run(runs_dir, "r1", seed=2, extra_files={"scores/zz-corrupt.parquet": _bad_scores_table()})
    with pytest.raises(IngestError, match="zz-corrupt.parquet") as e:
        store.ingest_all(runs_dir)
    assert e.value.failures.keys() == {"r1"} and e.value.ingested == []
    assert dump(store.con) == before


def test_missing_column_is_named(store, runs_dir, make_run):
    bad = pa.table({"method": ["m"], "checkpoint": pa.array([1], pa.int32()), "test_id": pa.array([0], pa.int32()),
                    "train_id": pa.array([0], pa.int32())})
    d = make_run(runs_dir, "r", extra_files={"scores/nocol.parquet": bad})
    with pytest.raises(IngestError, match=r"nocol\.parquet lacks column\(s\) score"):
        ingest.ingest_run(store.con, d.folder)
    assert counts(store.con) == dict.fromkeys(N_TABLES, 0)


@pytest.mark.parametrize("column", ["method", "checkpoint", "train_id"])
def test_null_keys_are_rejected(store, runs_dir, make_run, column):
    good = {"method": pa.array(["gradsim", "gradsim"]), "checkpoint": pa.array([1, 1], pa.int32()),
            "test_id": pa.array([0, 0], pa.int32()), "train_id": pa.array([0, 1], pa.int32()),
            "score": pa.array([0.5, 0.25], pa.float32())}
    good[column] = pa.array([None, None], good[column].type)
    d = make_run(runs_dir, "r", extra_files={"scores/nulls.parquet": pa.table(good)})
    with pytest.raises(IngestError, match=r"nulls\.parquet"):
        ingest.ingest_run(store.con, d.folder)
    assert counts(store.con) == dict.fromkeys(N_TABLES, 0)


def test_sample_count_mismatch(store, runs_dir, make_run):
    d = make_run(runs_dir, "r", manifest_extra={"n_train": 99})
    with pytest.raises(IngestError, match="n_train = 99"):
        ingest.ingest_run(store.con, d.folder)
    assert counts(store.con) == dict.fromkeys(N_TABLES, 0)


@pytest.mark.parametrize("change", ["shift", "duplicate"])
def test_sample_ids_must_count_from_zero(store, runs_dir, make_run, change):
    """The queries place scores by sample id: ids of a split other than 0..n-1, each once, are refused."""
    d = make_run(runs_dir, "r")
    path = d.folder / "samples.parquet"
    t = pq.read_table(path)
    ids = t.column("sample_id").to_numpy().copy()
    train = np.flatnonzero(t.column("split").to_numpy(zero_copy_only=False) == "train")
    ids[train] = ids[train] + 1 if change == "shift" else np.minimum(ids[train], d.n_train - 2)
    pq.write_table(t.set_column(t.schema.get_field_index("sample_id"), "sample_id", pa.array(ids, pa.int32())), path)
    with pytest.raises(IngestError, match=r"train sample ids of .*samples\.parquet are not 0\.\.11, each once"):
        ingest.ingest_run(store.con, d.folder)
    assert counts(store.con) == dict.fromkeys(N_TABLES, 0)


def test_ingest_all_non_strict_skips_failures(store, runs_dir, caplog, make_run):
    make_run(runs_dir, "good")
    make_run(runs_dir, "bad", extra_files={"scores/zz.parquet": _bad_scores_table()})
    assert ingest.ingest_all(store.con, runs_dir, strict=False) == ["good"]
    assert "bad" in caplog.text
    assert runs.list_runs(store.con)["run_id"].tolist() == ["good"]


def test_prune_and_remove(store, runs_dir, make_run):
    make_run(runs_dir, "a")
    make_run(runs_dir, "b")
    store.ingest_all(runs_dir)
    shutil.rmtree(runs_dir / "b")
    assert store.ingest_all(runs_dir) == []
    assert len(runs.list_runs(store.con)) == 2  # no prune by default
    store.ingest_all(runs_dir, prune=True)
    assert runs.list_runs(store.con)["run_id"].tolist() == ["a"]
    assert counts(store.con, "b") == dict.fromkeys(N_TABLES, 0)
    assert ingest.remove_run(store.con, "a") is True and ingest.remove_run(store.con, "a") is False
    assert counts(store.con) == dict.fromkeys(N_TABLES, 0)


def test_odd_run_names_are_data_not_sql(store, runs_dir, make_run):
    d = make_run(runs_dir, "plain")
    evil = "x'); DROP TABLE scores; --"
    shutil.copytree(d.folder, runs_dir / evil)
    assert sorted(store.ingest_all(runs_dir)) == sorted(["plain", evil])
    assert counts(store.con, evil) == counts(store.con, "plain")
    top = [scores.top_k(store.con, name, "gradsim", 1, 0, 3) for name in (evil, "plain")]
    assert top[0].equals(top[1])
    ingest.remove_run(store.con, evil)
    assert counts(store.con, "plain")["topk"] > 0


# ---------------------------------------------------------------------------------------------- rebuild


def test_rebuild_gives_identical_results(runs_dir, tmp_path, make_run):
    for i, name in enumerate(("a", "b", "c")):
        make_run(runs_dir, name, seed=i, n_train=10 + i)
    first, second = tmp_path / "one.duckdb", tmp_path / "two.duckdb"
    with Store(first) as s:
        s.ingest_all(runs_dir)
    assert db.rebuild(second, runs_dir) == ["a", "b", "c"]
    db.rebuild(first, runs_dir)  # over an existing, valid database
    assert not list(tmp_path.glob(".*rebuild*"))
    with Store(first, read_only=True) as s1, Store(second, read_only=True) as s2:
        assert dump(s1.con) == dump(s2.con)
        for q in (lambda c: metrics.leaderboard(c), lambda c: metrics.leaderboard(c, k=2),
                  lambda c: scores.top_k(c, "b", "datainf", 2, 3, 5), lambda c: samples.samples(c, "c")):
            assert q(s1.con).equals(q(s2.con))


def test_rebuild_over_corrupt_or_missing_db(runs_dir, db_path, make_run):
    make_run(runs_dir, "a")
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(np.random.default_rng(0).bytes(100_000))
    db_path.with_name(db_path.name + ".wal").write_bytes(b"garbage wal")
    with pytest.raises(Exception):
        Store(db_path)
    assert db.rebuild(db_path, runs_dir) == ["a"]
    assert not db_path.with_name(db_path.name + ".wal").exists()
    with Store(db_path) as s:
        assert counts(s.con, "a")["topk"] > 0
    missing = db_path.with_name("fresh.duckdb")
    assert db.rebuild(missing, runs_dir) == ["a"] and missing.exists()


def test_rebuild_default_runs_dir(db_path, make_run):
    make_run(db_path.parent / "runs", "a")
    assert db.rebuild(db_path) == ["a"]


def test_crash_mid_rebuild_keeps_old_db(runs_dir, db_path, monkeypatch, make_run):
    make_run(runs_dir, "a")
    db.rebuild(db_path, runs_dir)
    digest = hashlib.sha256(db_path.read_bytes()).hexdigest()

    def boom(*a, **k):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(ingest, "ingest_all", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        db.rebuild(db_path, runs_dir)
    assert hashlib.sha256(db_path.read_bytes()).hexdigest() == digest
    assert [p.name for p in db_path.parent.iterdir() if "rebuild" in p.name] == []


def test_rebuild_strict_failure_keeps_old_db(runs_dir, db_path, make_run):
    make_run(runs_dir, "a")
    db.rebuild(db_path, runs_dir)
    make_run(runs_dir, "b", extra_files={"scores/zz.parquet": _bad_scores_table()})
    with pytest.raises(IngestError):
        db.rebuild(db_path, runs_dir, strict=True)
    with Store(db_path, read_only=True) as s:
        assert runs.list_runs(s.con)["run_id"].tolist() == ["a"]
    assert db.rebuild(db_path, runs_dir) == ["a"]  # non-strict: bad run skipped


def test_stale_rebuild_temp_files_removed(runs_dir, db_path, make_run):
    db_path.parent.mkdir(parents=True)
    stale = db_path.with_name(f".{db_path.name}.rebuild-999999999")
    stale.write_bytes(b"left by a killed rebuild")
    make_run(runs_dir, "a")
    db.rebuild(db_path, runs_dir)
    assert not stale.exists()


def test_ingest_uses_parameters_for_paths(store, tmp_path, make_run):
    """A runs dir whose path contains a quote still loads (paths are parameters, not SQL text)."""
    runs = tmp_path / "it's runs"
    make_run(runs, "a")
    assert store.ingest_all(runs) == ["a"]
    assert isinstance(store.con, duckdb.DuckDBPyConnection)


# ---------------------------------------------------------------------------------------------- changing folders


def _replace_during(monkeypatch, replace, when=lambda n, table: n == 2):
    """Make ``_insert_table`` call ``replace()`` before its n-th call (1-based) whenever ``when(n, table)``."""
    real = ingest._insert_table
    calls = []

    def insert(con, run_id, table, paths):
        calls.append(table)
        if when(len(calls), table):
            replace()
        real(con, run_id, table, paths)

    monkeypatch.setattr(ingest, "_insert_table", insert)
    return calls


def _alone(folder) -> dict:
    """The rows ``folder`` gives in a database of its own."""
    with Store(":memory:") as s:
        assert ingest.ingest_run(s.con, folder)
        return dump(s.con)


@pytest.mark.parametrize("n_train", [12, 15])  # the re-run has the same sizes, or other sample counts
def test_a_folder_replaced_while_it_is_ingested_is_loaded_again_whole(store, runs_dir, make_run, monkeypatch, n_train):
    """A re-run replaces the folder half-way through the load (after the first table): the rows read so far are
    a mix of two runs, so the load starts again, and the database ends up holding exactly the new run."""
    make_run(runs_dir, "r", seed=0)
    calls = _replace_during(monkeypatch, lambda: make_run(runs_dir, "r", seed=1, n_train=n_train))
    assert ingest.ingest_run(store.con, runs_dir / "r") is True
    assert calls == sorted(set(calls)) * 2  # every table was loaded twice: the mix, then the new run
    monkeypatch.undo()
    assert dump(store.con) == _alone(runs_dir / "r")
    assert counts(store.con)["samples"] == n_train + 5


def test_a_folder_that_keeps_changing_is_refused_and_the_old_rows_stay(store, runs_dir, make_run, monkeypatch):
    make_run(runs_dir, "r", seed=0)
    ingest.ingest_run(store.con, runs_dir / "r")
    before = dump(store.con)
    make_run(runs_dir, "r", seed=1)  # a re-run to ingest...
    seeds = iter(range(2, 100))  # ...which is replaced again during every attempt
    _replace_during(monkeypatch, lambda: make_run(runs_dir, "r", seed=next(seeds)),
                    when=lambda n, table: table == "samples")
    with pytest.raises(IngestError, match="kept changing while being ingested"):
        ingest.ingest_run(store.con, runs_dir / "r")
    assert dump(store.con) == before


def test_a_folder_deleted_while_it_is_ingested_writes_nothing(store, runs_dir, make_run, monkeypatch):
    make_run(runs_dir, "r")
    _replace_during(monkeypatch, lambda: shutil.rmtree(runs_dir / "r"))
    assert ingest.ingest_run(store.con, runs_dir / "r") is False
    assert counts(store.con) == {t: 0 for t in N_TABLES}


# ---------------------------------------------------------------------------------------------- killed mid-ingest

KILLABLE = r"""
import sys, time
import store
from store import ingest
db, folder, pause_after = sys.argv[1:4]
real = ingest._insert_table

def insert(con, run_id, table, paths):
    real(con, run_id, table, paths)
    if table == pause_after:  # inside the transaction, with this table's rows written
        print("paused", flush=True)
        time.sleep(600)

ingest._insert_table = insert
with store.Store(db) as s:
    ingest.ingest_run(s.con, folder, checkpoint=False)
    print("paused", flush=True)  # committed, but only in the write-ahead log: no CHECKPOINT yet
    time.sleep(600)
"""


@pytest.mark.parametrize("pause_after", ["samples", "scores", "committed"])
def test_a_process_killed_mid_ingest_leaves_the_database_unchanged_or_fully_updated(
        runs_dir, db_path, make_run, pause_after):
    """The database holds run r; a re-run replaced its folder; a process ingesting the new folder is SIGKILLed
    part-way. Killed inside the transaction, the database holds exactly the old run; killed after the commit
    (before any checkpoint), exactly the new one. Never a mix."""
    import os
    import signal
    import subprocess
    import sys

    from engine.paths import REPO_ROOT

    make_run(runs_dir, "r", seed=0)
    with Store(db_path) as s:
        ingest.ingest_run(s.con, runs_dir / "r")
        old = dump(s.con)
    make_run(runs_dir, "r", seed=1, n_train=15)
    new = _alone(runs_dir / "r")
    assert new != old
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(db_path), str(runs_dir / "r"), pause_after],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "paused"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with Store(db_path, read_only=True) as s:
        assert dump(s.con) == (new if pause_after == "committed" else old)
