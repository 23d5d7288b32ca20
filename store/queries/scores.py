"""Scores and rankings of one (run, method, checkpoint): a test prompt's top k, one prompt's full row, the whole
matrix, how often each training sample ranks high, and which test prompts rank a training sample.

Pages read rankings (``topk``), one prompt's full row, or aggregates computed here; only :func:`score_matrix`
(tests, benchmarks, the CLI) loads a whole matrix, and no page may call it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from store.queries.common import (
    fetch_df,
    in_place,
    integer,
    positive,
    ranked_cte,
    read_sql,
    require_sample,
    require_scores,
    sample_ids,
    score_files,
    todo_one,
)
from store.schema import rank_key


def top_k(con, run: str, method: str, checkpoint: int, test_id: int, k: int) -> pd.DataFrame:
    """The ``k`` training samples ranked highest for one test sample: rank (1-based), train_id, score, prompt,
    response, label, same_label (train label == test label). Ties: lowest train_id first. From ``topk`` when k is
    within the stored ranks, else from the score files in place (one prompt's rows)."""
    stored = require_scores(con, run, method, checkpoint)
    require_sample(con, run, "test", test_id)
    ckpt, k = int(checkpoint), positive(k, "k")
    in_table = k <= stored
    if in_table:
        ranked = ("(SELECT rank, train_id, score FROM topk WHERE run_id = $run AND method = $method "
                  "AND checkpoint = $ckpt AND test_id = $test AND rank <= $k)")
    else:
        ranked = (f"(SELECT CAST(row_number() OVER (ORDER BY {rank_key()} DESC) AS INTEGER) AS rank, train_id, "
                  f"score FROM (SELECT train_id, score FROM {in_place(' AND test_id = $test')} "
                  f"ORDER BY {rank_key()} DESC LIMIT $k))")
    sql = f"""
        SELECT s.rank, s.train_id, s.score, tr.prompt, tr.response, tr.label,
               coalesce(tr.label = te.label, false) AS same_label
        FROM {ranked} s
        LEFT JOIN samples tr ON tr.run_id = $run AND tr.split = 'train' AND tr.sample_id = s.train_id
        LEFT JOIN samples te ON te.run_id = $run AND te.split = 'test' AND te.sample_id = $test
        ORDER BY s.rank
        """
    params = {"run": run, "method": method, "ckpt": ckpt, "test": integer(test_id, "test_id"), "k": k}
    return read_sql(con, run, sql, params, None if in_table else score_files(con, run, method, ckpt))


def score_row(con, run: str, method: str, checkpoint: int, test_id: int) -> np.ndarray:
    """One test sample's scores over every training sample: float32 ``[n_train]`` in training sample-id order
    (NaN where a score is missing), i.e. row ``test_id`` of :func:`score_matrix`, read in place from the run
    folder (one row group of a merged score file)."""
    require_scores(con, run, method, checkpoint)
    require_sample(con, run, "test", test_id)
    ckpt = int(checkpoint)
    sql = f"SELECT train_id, score FROM {in_place(' AND test_id = $test')}"
    got = read_sql(con, run, sql, {"method": method, "ckpt": ckpt, "test": integer(test_id, "test_id")},
                   score_files(con, run, method, ckpt), numpy=True)
    train_ids = sample_ids(con, run, "train")
    out = np.full(len(train_ids), np.nan, dtype=np.float32)
    cols, ok = _positions(train_ids, got["train_id"])
    out[cols[ok]] = np.asarray(got["score"], dtype=np.float32)[ok]
    return out


def score_matrix(con, run: str, method: str, checkpoint: int) -> np.ndarray:
    """The dense float32 score matrix ``[n_test, n_train]`` (rows/columns in sample-id order; NaN where a
    score is missing), read from the score files in place. Loads every score of that method and checkpoint into
    memory: for tests, benchmarks and the CLI, never for a page (they use :func:`top_k`, :func:`score_row` and
    the aggregates)."""
    require_scores(con, run, method, checkpoint)
    ckpt = int(checkpoint)
    test_ids = sample_ids(con, run, "test")
    train_ids = sample_ids(con, run, "train")
    got = read_sql(con, run, f"SELECT test_id, train_id, score FROM {in_place()}", {"method": method, "ckpt": ckpt},
                   score_files(con, run, method, ckpt), numpy=True)
    out = np.full((len(test_ids), len(train_ids)), np.nan, dtype=np.float32)
    rows, row_ok = _positions(test_ids, got["test_id"])
    cols, col_ok = _positions(train_ids, got["train_id"])
    ok = row_ok & col_ok  # scores of ids missing from samples are dropped
    out[rows[ok], cols[ok]] = np.asarray(got["score"], dtype=np.float32)[ok]
    return out


def _positions(sorted_ids: np.ndarray, values) -> tuple[np.ndarray, np.ndarray]:
    """Index of each value in ``sorted_ids`` and whether it is there at all."""
    values = np.asarray(values)
    n = len(sorted_ids)
    if n and sorted_ids[0] == 0 and sorted_ids[-1] == n - 1:  # ids 0..n-1 (sorted, distinct): a value is its index
        ok = (values >= 0) & (values < n)
        return np.where(ok, values, 0), ok
    pos = np.searchsorted(sorted_ids, values)
    clipped = np.minimum(pos, max(len(sorted_ids) - 1, 0))
    ok = (pos < len(sorted_ids)) & (sorted_ids[clipped] == values) if len(sorted_ids) else np.zeros(len(values), bool)
    return clipped, ok


def top1_counts(con, run: str, method: str, checkpoint: int) -> pd.DataFrame:
    """For every training sample, how many test samples rank it first (n_top1, share of test samples), with its
    prompt/response/label; most frequent first. One dominant row = the "one sample explains everything" failure.
    From ``topk`` (rank 1)."""
    require_scores(con, run, method, checkpoint)
    return fetch_df(
        con,
        """
        WITH top1 AS (
            SELECT test_id, train_id FROM topk
            WHERE run_id = $run AND method = $method AND checkpoint = $ckpt AND rank = 1
        )
        SELECT tr.sample_id AS train_id, count(t.test_id) AS n_top1,
               count(t.test_id) / greatest((SELECT count(*) FROM top1), 1) AS share,
               tr.prompt, tr.response, tr.label
        FROM samples tr LEFT JOIN top1 t ON t.train_id = tr.sample_id
        WHERE tr.run_id = $run AND tr.split = 'train'
        GROUP BY tr.sample_id, tr.prompt, tr.response, tr.label
        ORDER BY n_top1 DESC, train_id
        """,
        {"run": run, "method": method, "ckpt": int(checkpoint)},
    )


def topk_counts(con, run: str, method: str, checkpoint: int, k: int) -> pd.DataFrame:
    """For every training sample (train_id order): n, in how many test samples' top ``k`` it is (by the one
    ranking), and n_top1, how many rank it first. From ``topk`` when k is within the stored ranks, else ranked in
    place from the score files (a heap of k per test prompt: memory n_test x k)."""
    stored = require_scores(con, run, method, checkpoint)
    ckpt, k = int(checkpoint), positive(k, "k")
    in_table = k <= stored
    sql = f"""
        WITH {todo_one()}, {ranked_cte(in_table)},
        counts AS (SELECT train_id, count(*) AS n, count(*) FILTER (WHERE rnk = 1) AS n_top1 FROM ranked
                   GROUP BY train_id)
        SELECT tr.sample_id AS train_id, coalesce(c.n, 0) AS n, coalesce(c.n_top1, 0) AS n_top1
        FROM samples tr LEFT JOIN counts c ON c.train_id = tr.sample_id
        WHERE tr.run_id = $run AND tr.split = 'train'
        ORDER BY train_id
        """
    return read_sql(con, run, sql, {"run": run, "method": method, "ckpt": ckpt, "k": k},
                    None if in_table else score_files(con, run, method, ckpt))


def test_prompts_ranking_train(con, run: str, method: str, checkpoint: int, train_id: int, k: int) -> pd.DataFrame:
    """Test samples that have training sample ``train_id`` in their top ``k``: test_id, rank (of the training
    sample for that test sample), score, prompt, response, label, same_label; best rank first. From ``topk`` when
    k is within the stored ranks, else from the score files in place (a scan of the whole score set)."""
    stored = require_scores(con, run, method, checkpoint)
    require_sample(con, run, "train", train_id)
    ckpt, k = int(checkpoint), positive(k, "k")
    in_table = k <= stored
    if in_table:
        ranks = ("ranks AS (SELECT test_id, rank, score FROM topk WHERE run_id = $run AND method = $method "
                 "AND checkpoint = $ckpt AND train_id = $train AND rank <= $k)")
    else:
        ranks = f"""blk AS (SELECT * FROM {in_place()}),
        t AS (SELECT test_id, train_id, score FROM blk WHERE train_id = $train),
        ranks AS (  -- 1 + how many training samples rank above it, by the one ranking key
            SELECT t.test_id, any_value(t.score) AS score,
                   1 + count(*) FILTER (WHERE {rank_key("b")} > {rank_key("t")}) AS rank
            FROM t JOIN blk b USING (test_id) GROUP BY t.test_id
        )"""
    sql = f"""
        WITH {ranks}
        SELECT r.test_id, r.rank, r.score, te.prompt, te.response, te.label,
               coalesce(te.label = tr.label, false) AS same_label
        FROM ranks r
        LEFT JOIN samples te ON te.run_id = $run AND te.split = 'test' AND te.sample_id = r.test_id
        LEFT JOIN samples tr ON tr.run_id = $run AND tr.split = 'train' AND tr.sample_id = $train
        WHERE r.rank <= $k
        ORDER BY r.rank, r.test_id
        """
    params = {"run": run, "method": method, "ckpt": ckpt, "train": integer(train_id, "train_id"), "k": k}
    return read_sql(con, run, sql, params, None if in_table else score_files(con, run, method, ckpt))
