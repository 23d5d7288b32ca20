"""Behaviours and groups: a behaviour's ranking of the training samples (the mean over a query group of test
samples, minus a control group's), and influence summed over groups of samples (by label or another column)."""

from __future__ import annotations

import pandas as pd

from engine.runfolder import runformat
from store.queries.common import in_place, read_sql, require_scores, sample_ids, score_files
from store.schema import rank_key

# Sample columns a group view may group by: the text columns of samples that describe a sample (the run-folder
# format's declaration: a column added there, e.g. an imported "source", is offered as it is declared).
GROUP_COLUMNS: tuple[str, ...] = tuple(c for c, t in runformat.TABLES["samples"].columns.items()
                                       if t == "str" and c not in ("split", "prompt", "response"))


def _test_ids(con, run: str, ids, what: str) -> list[int]:
    """``ids`` as a sorted list of distinct test ids of ``run``; ValueError naming the group if one is unknown."""
    try:
        wanted = sorted({int(i) for i in ids})
    except (TypeError, ValueError):
        raise ValueError(f"{what}: test ids must be integers, got {list(ids)!r}") from None
    known = set(sample_ids(con, run, "test").tolist())
    unknown = [i for i in wanted if i not in known]
    if unknown:
        raise ValueError(f"{what}: run {run!r} has no test sample(s) {unknown[:10]}"
                         f"{' …' if len(unknown) > 10 else ''} (test ids are 0..{max(known) if known else -1})")
    return wanted


def behaviour_scores(con, run: str, method: str, checkpoint: int, query_ids, control_ids=None) -> pd.DataFrame:
    """A behaviour's ranking of the training samples: score of training sample i = the mean of its scores over the
    test samples of the query group, minus the mean over the control group when one is given (a contrast).

    One row per training sample, ranked (the one ranking key): rank, train_id, score, query_mean, control_mean
    (NaN without a control), label, prompt, response. A NaN score in a group makes that sample's mean NaN (it
    ranks last). Raises ValueError for an empty query group, unknown test ids or a test id in both groups."""
    require_scores(con, run, method, checkpoint)
    query = _test_ids(con, run, query_ids, "query group")
    control = _test_ids(con, run, control_ids or [], "control group")
    if not query:
        raise ValueError("query group: choose at least one test sample")
    both = sorted(set(query) & set(control))
    if both:
        raise ValueError(f"test sample(s) {both[:10]} are in both the query and the control group")
    ckpt = int(checkpoint)
    sql = f"""
        WITH blk AS (
            SELECT train_id, test_id, score FROM {in_place(" AND test_id IN (SELECT unnest($tests))")}
        ),
        q AS (SELECT train_id, avg(score) AS m FROM blk WHERE test_id IN (SELECT unnest($query)) GROUP BY train_id),
        c AS (SELECT train_id, avg(score) AS m FROM blk WHERE test_id IN (SELECT unnest($control)) GROUP BY train_id),
        s AS (
            SELECT q.train_id, q.m AS query_mean, c.m AS control_mean,
                   CASE WHEN $has_control THEN q.m - c.m ELSE q.m END AS score
            FROM q LEFT JOIN c USING (train_id)
        )
        SELECT row_number() OVER (ORDER BY {rank_key("s")} DESC) AS rank, s.train_id, s.score, s.query_mean,
               coalesce(s.control_mean, 'NaN'::DOUBLE) AS control_mean, tr.label, tr.prompt, tr.response
        FROM s LEFT JOIN samples tr ON tr.run_id = $run AND tr.split = 'train' AND tr.sample_id = s.train_id
        ORDER BY rank
        """
    params = {"run": run, "method": method, "ckpt": ckpt, "query": query, "control": control or [-1],
              "tests": query + control, "has_control": bool(control)}
    return read_sql(con, run, sql, params, score_files(con, run, method, ckpt))


def group_influence(con, run: str, method: str, checkpoint: int, by: str = "label") -> pd.DataFrame:
    """Influence aggregated by groups of samples: one row per (training group, test group) of column ``by``
    (one of :data:`GROUP_COLUMNS`): total (sum of the scores of every pair), mean (per pair), positive (sum of the
    positive scores), share (that positive sum over the test group's positive sum over all training groups: how
    much of the test group's positive influence this training group holds), n_pairs, n_train, n_test. NaN scores
    are left out. Rows sorted by test group, then training group."""
    if by not in GROUP_COLUMNS:
        raise ValueError(f"cannot group by {by!r}; sample columns to group by: {', '.join(GROUP_COLUMNS)}")
    require_scores(con, run, method, checkpoint)
    ckpt = int(checkpoint)
    # ``by`` is one of our constant column names (checked above), never user text; one pass over the score files
    sql = f"""
        WITH cells AS (
            SELECT tr.{by} AS train_group, te.{by} AS test_group, sum(s.score) AS total, avg(s.score) AS mean,
                   sum(greatest(s.score, 0)) AS positive, count(*) AS n_pairs,
                   count(DISTINCT s.train_id) AS n_train, count(DISTINCT s.test_id) AS n_test
            FROM {in_place(" AND NOT isnan(score)")} s
            JOIN samples tr ON tr.run_id = $run AND tr.split = 'train' AND tr.sample_id = s.train_id
            JOIN samples te ON te.run_id = $run AND te.split = 'test' AND te.sample_id = s.test_id
            GROUP BY ALL
        )
        SELECT train_group, test_group, total, mean, positive,
               positive / nullif(sum(positive) OVER (PARTITION BY test_group), 0) AS share,
               n_pairs, n_train, n_test
        FROM cells ORDER BY test_group, train_group
        """
    return read_sql(con, run, sql, {"run": run, "method": method, "ckpt": ckpt}, score_files(con, run, method, ckpt))
