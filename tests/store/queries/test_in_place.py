"""Score matrices read in place from the run folders: runs written by the engine's own table builders (shards
merged at commit, and the unmerged layout of run folders written before the merge), per-test method agreement,
and a run folder that disappears after it was ingested."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy.stats import spearmanr

from engine.evaluation.tables import Evaluation, scores_table
from engine.runfolder.runformat import scores_file
from engine.runfolder.writer import open_run
from store.db import Store
from store.errors import RunFilesError
from store.queries import agreement, scores
from store.queries.metrics import leaderboard

LABELS = ("a", "b", "c")


def engine_run(runs_dir: Path, name: str, *, merge: bool = True, n_train: int = 23, n_test: int = 7,
               shard: int = 5, methods=("gradsim", "repsim"), seed: int = 0):
    """A run folder written as the pipeline writes one: samples, score shards of ``shard`` training samples
    (``scores_table``), metrics and agreement (``Evaluation``), committed with or without the shard merge.
    Returns (folder, {method: S}, train labels, test labels)."""
    from engine.data.tasks.base import Sample, TaskData
    from engine.evaluation.tables import samples_table

    rng = np.random.default_rng(seed)
    tr = [LABELS[i] for i in rng.integers(0, 3, n_train)]
    te = [LABELS[i] for i in rng.integers(0, 3, n_test)]
    task = TaskData("t", [Sample(f"train {i}", f"r{i}", lab) for i, lab in enumerate(tr)],
                    [Sample(f"test {j}", f"a{j}", lab) for j, lab in enumerate(te)])
    mats = {m: np.round(rng.normal(size=(n_test, n_train)), 1).astype(np.float32) for m in methods}  # ties
    ev = Evaluation(tr, te, k=4)
    with open_run(runs_dir, name) as w:
        w.write_table("samples.parquet", samples_table(task))
        for m, S in mats.items():
            for s, a in enumerate(range(0, n_train, shard)):
                w.write_table(scores_file(m, 1, s), scores_table(m, 1, S[:, a:a + shard], a))
            ev.add(m, 1, S)
        ev.add_agreement(1)
        ev.write(w)
        folder = w.commit({"run": name, "kind": "pipeline", "n_train": n_train, "n_test": n_test,
                           "labels": list(LABELS), "k_default": 4, "methods": list(methods), "checkpoints": [1]},
                          merge_scores=merge)
    return folder, mats, np.array(tr), np.array(te)


@pytest.fixture(params=[True, False], ids=["merged", "shards"])
def engine_runs(request, tmp_path):
    """An ingested engine-written run (merged, or in the pre-merge shard layout) in a store keeping the top 3."""
    folder, mats, tr, te = engine_run(tmp_path / "runs", "r", merge=request.param)
    with Store(tmp_path / "db.duckdb", top_k=3) as s:
        assert s.ingest_all(tmp_path / "runs") == ["r"]
        yield s.con, folder, mats, tr, te


def test_the_layout_the_store_reads(engine_runs):
    con, folder, mats, _, _ = engine_runs
    files = sorted(p.name for p in (folder / "scores").iterdir())
    merged = files == ["gradsim-ckpt1.parquet", "repsim-ckpt1.parquet"]
    assert merged or len(files) == 2 * 5  # 23 training samples in shards of 5
    got = con.execute("SELECT method, count(*), sum(n_rows) FROM score_files GROUP BY method ORDER BY method")
    assert got.fetchall() == [(m, 1 if merged else 5, 7 * 23) for m in ("gradsim", "repsim")]


def test_queries_on_engine_written_runs_match_numpy(engine_runs):
    """The same answers whatever the layout, from topk (k <= 3) and in place (k > 3)."""
    from engine.evaluation import metrics

    con, _, mats, tr, te = engine_runs
    for m, S in mats.items():
        order = metrics.ranking(S)
        np.testing.assert_array_equal(scores.score_matrix(con, "r", m, 1), S)
        for j in range(len(te)):
            np.testing.assert_array_equal(scores.score_row(con, "r", m, 1, j), S[j])
            for k in (2, 3, 9):
                assert scores.top_k(con, "r", m, 1, j, k)["train_id"].tolist() == order[j, :k].tolist()
        for k in (1, 3, 6):
            want = metrics.summarize(S, tr, te, k)
            row = leaderboard(con, "r", k=k).set_index("method").loc[m]
            assert row.acc == pytest.approx(want["acc"]) and row.coverage == pytest.approx(want["coverage"])
            assert scores.topk_counts(con, "r", m, 1, k)["n"].tolist() == metrics.topk_counts(S, k).tolist()
            for i in (0, 11):
                rev = scores.test_prompts_ranking_train(con, "r", m, 1, i, k)
                ranks = {j: int(np.flatnonzero(order[j] == i)[0]) + 1 for j in range(len(te))}
                assert dict(zip(rev.test_id, rev["rank"])) == {j: r for j, r in ranks.items() if r <= k}


def test_per_test_agreement_is_stored_and_read_back(engine_runs):
    """test_agreement: per test prompt, the Spearman (scipy, a loop) and top-k overlap of two methods' rows;
    their means are the agreement table's."""
    con, _, mats, _, _ = engine_runs
    A, B = mats["gradsim"], mats["repsim"]
    got = agreement.test_agreement(con, "r", 1, "repsim", "gradsim")  # either order of the pair
    assert got["test_id"].tolist() == list(range(len(A))) and set(got.k) == {4}
    rho = [spearmanr(a, b).statistic for a, b in zip(A, B)]
    top = lambda row: set(np.argsort(-row, kind="stable")[:4].tolist())  # noqa: E731
    overlap = [len(top(a) & top(b)) / 4 for a, b in zip(A, B)]
    np.testing.assert_allclose(got.spearman, rho, rtol=1e-9)
    np.testing.assert_allclose(got.overlap, overlap)
    mean = agreement.agreement(con, "r", 1).iloc[0]
    assert mean.spearman == pytest.approx(np.mean(rho)) and mean.overlap == pytest.approx(np.mean(overlap))
    assert agreement.test_agreement(con, "r", 1, "gradsim", "gradsim").empty


def test_a_run_folder_deleted_after_ingest_gives_a_clear_error(tmp_path):
    """What the database holds still answers (top k within the stored ranks); what needs the score files raises
    RunFilesError naming the run and the missing file, never a DuckDB error."""
    folder, mats, _, _ = engine_run(tmp_path / "runs", "gone")
    with Store(tmp_path / "db.duckdb", top_k=3) as s:
        s.ingest_all(tmp_path / "runs")
        shutil.rmtree(folder)
        top = scores.top_k(s.con, "gone", "gradsim", 1, 0, 3)
        assert top["train_id"].tolist() == np.argsort(-mats["gradsim"][0], kind="stable")[:3].tolist()
        for call in (lambda: scores.score_row(s.con, "gone", "gradsim", 1, 0),
                     lambda: scores.top_k(s.con, "gone", "gradsim", 1, 0, 5),
                     lambda: scores.score_matrix(s.con, "gone", "gradsim", 1),
                     lambda: leaderboard(s.con, "gone", k=7),
                     lambda: scores.topk_counts(s.con, "gone", "gradsim", 1, 9),
                     lambda: scores.test_prompts_ranking_train(s.con, "gone", "gradsim", 1, 0, 9)):
            with pytest.raises(RunFilesError, match=r"run 'gone': its score file .*gradsim-ckpt1\.parquet is gone"):
                call()


def test_a_damaged_score_file_gives_a_clear_error(tmp_path):
    folder, _, _, _ = engine_run(tmp_path / "runs", "bad")
    with Store(tmp_path / "db.duckdb", top_k=3) as s:
        s.ingest_all(tmp_path / "runs")
        (folder / "scores" / "gradsim-ckpt1.parquet").write_bytes(b"not parquet at all")
        with pytest.raises(RunFilesError, match=r"run 'bad': its score files could not be read"):
            scores.score_row(s.con, "bad", "gradsim", 1, 0)


def test_merged_file_rows_are_sorted_with_whole_prompts_per_row_group(tmp_path, monkeypatch):
    """The merged file: rows by (test_id, train_id); each row group holds whole prompts (a few per group when the
    target is small), so a per-prompt read decodes one group."""
    from engine.runfolder import runformat

    monkeypatch.setattr(runformat, "SCORES_ROW_GROUP_ROWS", 50)  # 2 prompts of 23 per row group
    folder, mats, _, _ = engine_run(tmp_path / "runs", "r", methods=("gradsim",))
    f = pq.ParquetFile(folder / "scores" / "gradsim-ckpt1.parquet")
    t = f.read().to_pandas()
    assert list(zip(t.test_id, t.train_id)) == sorted(zip(t.test_id, t.train_id))
    np.testing.assert_array_equal(t.score.to_numpy().reshape(7, 23), mats["gradsim"])
    sizes = [f.metadata.row_group(g).num_rows for g in range(f.metadata.num_row_groups)]
    assert sizes == [46, 46, 46, 23]
