"""Score files laid out for per-prompt reads: row groups of whole prompts, and the merge of a method's shards
into one file per (method, checkpoint) at commit (bounded memory: a block of prompts at a time)."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow.parquet as pq
import pytest

from engine.evaluation.tables import scores_table
from engine.runfolder import runformat
from engine.runfolder.runformat import read_manifest, scores_file
from engine.runfolder.writer import open_run


def _write_shards(w, method, ckpt, S, widths):
    a = 0
    for s, width in enumerate(widths):
        w.write_table(scores_file(method, ckpt, s), scores_table(method, ckpt, S[:, a:a + width], a))
        a += width


def _dense(path, shape):
    t = pq.read_table(path).to_pandas()
    S = np.full(shape, np.nan, np.float32)
    S[t.test_id, t.train_id] = t.score
    return t, S


@pytest.mark.parametrize("target", [1, 40, 1 << 18])  # one prompt per block / several / the whole matrix
def test_shards_merge_into_one_sorted_file_per_method_and_checkpoint(tmp_path, monkeypatch, target):
    monkeypatch.setattr(runformat, "SCORES_ROW_GROUP_ROWS", target)
    rng = np.random.default_rng(0)
    mats = {("gradsim", 1): rng.normal(size=(9, 17)).astype(np.float32),
            ("gradsim", 2): rng.normal(size=(9, 17)).astype(np.float32),
            ("repsim", 2): rng.normal(size=(9, 17)).astype(np.float32)}
    with open_run(tmp_path, "r") as w:
        for (m, c), S in mats.items():
            _write_shards(w, m, c, S, [6, 6, 5])  # uneven shards, as the last one of a run is
        folder = w.commit({"run": "r"})
    files = read_manifest(folder)["files"]
    assert files == {scores_file(m, c): 9 * 17 for m, c in mats}  # the shards are gone from folder and manifest
    assert sorted(p.name for p in (folder / "scores").iterdir()) == sorted(f"{m}-ckpt{c}.parquet" for m, c in mats)
    per_group = max(1, target // 17)
    for (m, c), S in mats.items():
        path = folder / scores_file(m, c)
        t, got = _dense(path, S.shape)
        np.testing.assert_array_equal(got, S)
        assert list(zip(t.test_id, t.train_id)) == [(j, i) for j in range(9) for i in range(17)]
        assert set(t.method) == {m} and set(t.checkpoint) == {c}
        md = pq.ParquetFile(path).metadata
        sizes = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
        assert sizes == [17 * min(per_group, 9 - a) for a in range(0, 9, per_group)]  # whole prompts per group


def test_shards_in_any_file_order_merge_by_training_id(tmp_path):
    """A torchrun rank's shards may be listed before the other's: columns go in training-id order."""
    S = np.arange(4 * 10, dtype=np.float32).reshape(4, 10)
    with open_run(tmp_path, "r") as w:
        w.write_table(scores_file("m", 1, 1), scores_table("m", 1, S[:, :5], 0))  # shard numbers swapped
        w.write_table(scores_file("m", 1, 0), scores_table("m", 1, S[:, 5:], 5))
        folder = w.commit({"run": "r"})
    np.testing.assert_array_equal(_dense(folder / scores_file("m", 1), S.shape)[1], S)


def test_shards_that_do_not_fit_the_layout_stay_as_written(tmp_path, caplog):
    """A shard lacking a prompt: the group is left unmerged (readers accept any layout), with a warning."""
    S = np.ones((4, 6), np.float32)
    with open_run(tmp_path, "r") as w:
        w.write_table(scores_file("m", 1, 0), scores_table("m", 1, S[:, :3], 0))
        w.write_table(scores_file("m", 1, 1), scores_table("m", 1, S[:3, 3:], 3))  # prompt 3 missing
        _write_shards(w, "ok", 1, S, [3, 3])
        with caplog.at_level(logging.WARNING):
            folder = w.commit({"run": "r"})
    assert "left unmerged" in caplog.text and "m at checkpoint 1" in caplog.text
    assert sorted(read_manifest(folder)["files"]) == [scores_file("m", 1, 0), scores_file("m", 1, 1),
                                                      scores_file("ok", 1)]
    assert not list(folder.rglob("*.part"))


def test_commit_without_merge_keeps_the_shards(tmp_path):
    S = np.ones((2, 4), np.float32)
    with open_run(tmp_path, "r") as w:
        _write_shards(w, "m", 1, S, [2, 2])
        folder = w.commit({"run": "r"}, merge_scores=False)
    assert sorted(read_manifest(folder)["files"]) == [scores_file("m", 1, 0), scores_file("m", 1, 1)]


def test_score_files_are_written_with_row_groups_of_whole_prompts(tmp_path, monkeypatch):
    monkeypatch.setattr(runformat, "SCORES_ROW_GROUP_ROWS", 25)
    with open_run(tmp_path, "r") as w:
        w.write_table(scores_file("m", 0), scores_table("m", 0, np.zeros((7, 6), np.float32)))
        w.write_table("other.parquet", scores_table("m", 0, np.zeros((7, 6), np.float32)))  # not a score file
        md = pq.ParquetFile(w.tmp / scores_file("m", 0)).metadata
        assert [md.row_group(g).num_rows for g in range(md.num_row_groups)] == [24, 18]  # 4 prompts of 6, then 3
        assert pq.ParquetFile(w.tmp / "other.parquet").metadata.num_row_groups == 1


def test_rows_per_group_rule():
    assert runformat.scores_rows_per_group(100_000) == 200_000  # two prompts of a 100k-sample run
    assert runformat.scores_rows_per_group(10_000) == 260_000
    assert runformat.scores_rows_per_group(1_000_000) == 1_000_000  # never less than one prompt
    assert runformat.scores_rows_per_group(0) == runformat.SCORES_ROW_GROUP_ROWS
