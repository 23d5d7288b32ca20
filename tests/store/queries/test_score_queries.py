"""store.queries.scores (rankings, rows, the matrix, counts) against numpy references computed from the same
synthetic runs."""

from __future__ import annotations

import numpy as np
import pytest

from store.errors import UnknownSampleError
from store.queries import scores as q


@pytest.mark.parametrize("k", [1, 4, 15, 99])
def test_top_k_matches_numpy_with_ties(loaded, ref, k):
    con, runs = loaded
    d = runs["tied"]
    for (method, ckpt), S in d.scores.items():
        order = ref.rank_order(S)
        for test_id in range(d.n_test):
            df = q.top_k(con, "tied", method, ckpt, test_id, k)
            want = order[test_id, :k]
            assert df["train_id"].tolist() == want.tolist()
            assert df["rank"].tolist() == list(range(1, len(want) + 1))
            np.testing.assert_array_equal(df["score"].to_numpy(np.float32), S[test_id, want])
            same = d.train_labels[want] == d.test_labels[test_id]
            assert df["same_label"].tolist() == same.tolist()
            assert df["prompt"].tolist() == [d.train_prompts[i] for i in want]
    assert len(np.unique(d.scores[("gradsim", 1)][0])) < d.n_train  # the fixture really has ties


def test_score_matrix(loaded):
    con, runs = loaded
    for name, d in runs.items():
        for (method, ckpt), S in d.scores.items():
            M = q.score_matrix(con, name, method, ckpt)
            assert M.dtype == np.float32
            np.testing.assert_array_equal(M, S)


def test_top1_counts(loaded, ref):
    con, runs = loaded
    d = runs["tied"]
    S = d.scores[("datainf", 2)]
    top1 = ref.rank_order(S)[:, 0]
    df = q.top1_counts(con, "tied", "datainf", 2)
    assert len(df) == d.n_train and df["n_top1"].sum() == d.n_test
    counts = dict(zip(df["train_id"], df["n_top1"]))
    assert counts == {i: int((top1 == i).sum()) for i in range(d.n_train)}
    assert df["n_top1"].is_monotonic_decreasing
    assert df["share"].iloc[0] == pytest.approx(df["n_top1"].iloc[0] / d.n_test)


@pytest.mark.parametrize("k", [1, 3, 15])
def test_test_prompts_ranking_train(loaded, ref, k):
    con, runs = loaded
    d = runs["tied"]
    S = d.scores[("gradsim", 1)]
    order = ref.rank_order(S)
    for train_id in range(d.n_train):
        rank = {j: int(np.where(order[j] == train_id)[0][0]) + 1 for j in range(d.n_test)}
        want = sorted(((r, j) for j, r in rank.items() if r <= k))
        df = q.test_prompts_ranking_train(con, "tied", "gradsim", 1, train_id, k)
        assert list(zip(df["rank"], df["test_id"])) == want
        assert df["same_label"].tolist() == [bool(d.test_labels[j] == d.train_labels[train_id]) for _, j in want]


def test_score_row_is_one_row_of_the_matrix(loaded):
    con, runs = loaded
    for name, d in runs.items():
        for (method, ckpt), S in d.scores.items():
            for test_id in range(d.n_test):
                row = q.score_row(con, name, method, ckpt, test_id)
                assert row.dtype == np.float32 and row.shape == (d.n_train,)
                np.testing.assert_array_equal(row, S[test_id])
    with pytest.raises(UnknownSampleError, match="no test sample with id 99"):
        q.score_row(con, "tied", "gradsim", 1, 99)


@pytest.mark.parametrize("k", [1, 3, 5, 15, 40])
def test_topk_counts_match_numpy(loaded, ref, k):
    """How often each training sample is in a test prompt's top k (and first): from topk for k within the stored
    ranks, ranked in place beyond; against counting over the numpy ranking."""
    con, runs = loaded
    d = runs["tied"]
    for (method, ckpt), S in d.scores.items():
        order = ref.rank_order(S)
        df = q.topk_counts(con, "tied", method, ckpt, k)
        assert df["train_id"].tolist() == list(range(d.n_train))
        assert df["n"].tolist() == [int((order[:, :k] == i).sum()) for i in range(d.n_train)]
        assert df["n_top1"].tolist() == [int((order[:, 0] == i).sum()) for i in range(d.n_train)]
