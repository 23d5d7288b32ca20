"""The leaderboard: Acc@1, Coverage@k and the rest per (run, method, checkpoint), stored by the run or computed
here in SQL for another k, with bootstrap intervals from the per-test hits."""

from __future__ import annotations

import pandas as pd

from engine.evaluation.metrics import LABEL_METRICS, bootstrap_ci
from store.queries.common import (
    connection,
    fetch_df,
    fetch_one,
    positive,
    ranked_cte,
    read_sql,
    require_run,
    require_scores,
    score_files,
    todo_one,
)
from store.queries.runs import unlabelled_runs


def leaderboard(con, run: str | None = None, k: int | None = None) -> pd.DataFrame:
    """One row per (run, method, checkpoint): k, acc, coverage, auprc, chance_acc, chance_coverage,
    best_coverage, n_distinct_top1, source, and acc_lo/acc_hi, coverage_lo/coverage_hi: 95 % bootstrap
    intervals over the test samples (NaN only for a run that has metrics but no scores).

    ``k`` None: each run's ``k_default``. The stored metrics row for that k is used when there is one
    (``source = 'stored'``); otherwise (a custom k) everything but AUPRC is computed in SQL from the rankings
    (``source = 'computed'``): from ``topk`` when k is within the stored ranks, else from the score files in
    place. coverage@k = sum over test samples of same-label training samples among its top k / (n_test * k);
    best_coverage = mean of min(k, #same-label train) / k; chance = mean share of same-label training samples.
    k is clipped to [1, n_train]. A run without labels has NaN in every label metric (``LABEL_METRICS``).
    """
    if run is not None:
        require_run(con, run)
    if k is not None:
        k = positive(k, "k")
    stored = fetch_df(con, f"WITH {_REQUEST_CTES} SELECT * FROM stored ORDER BY run_id, method, checkpoint",
                      {"run": run, "k": k})
    todo = connection(con).execute(f"WITH {_REQUEST_CTES} SELECT * FROM todo ORDER BY run_id, method, checkpoint",
                                   {"run": run, "k": k}).fetchall()
    df = pd.concat([stored, _computed(con, todo)], ignore_index=True) if todo else stored
    df = df.sort_values(["run_id", "method", "checkpoint"], kind="stable").reset_index(drop=True)
    unlabelled = df.run_id.isin(unlabelled_runs(con))
    df.loc[unlabelled, list(LABEL_METRICS)] = float("nan")  # SQL's NULL = NULL comparisons would count as misses
    # intervals: stored with the metrics by the pipeline; for a custom k (or a run written before intervals)
    # bootstrapped here from the per-test hits, with the same rule (engine.evaluation.metrics.bootstrap_ci)
    for i in df.index[df.acc_lo.isna() & ~unlabelled]:
        r = df.loc[i]
        if not _has_scores(con, r.run_id, r.method, int(r.checkpoint)):
            continue
        hits = per_test_hits(con, r.run_id, r.method, int(r.checkpoint), int(r.k))
        df.loc[i, ["acc_lo", "acc_hi"]] = bootstrap_ci(hits.top1_same.to_numpy(float))
        df.loc[i, ["coverage_lo", "coverage_hi"]] = bootstrap_ci(hits.n_same.to_numpy(float) / int(r.k))
    return df


def per_test_hits(con, run: str, method: str, checkpoint: int, k: int) -> pd.DataFrame:
    """Per test sample of one score set: test_id, top1_same (its first-ranked training sample has its label) and
    n_same (how many of its top ``k`` do). Acc@1 and Coverage@k are their means (n_same / k); a paired
    comparison of two methods resamples these rows together (``engine.evaluation.metrics.paired_bootstrap_ci``)."""
    stored = require_scores(con, run, method, checkpoint)
    k = positive(k, "k")
    ckpt = int(checkpoint)
    in_table = k <= stored
    sql = (f"WITH {todo_one()}, {ranked_cte(in_table)}, {_PER_TEST_CTE} "
           "SELECT test_id, top1_same, n_same FROM per_test ORDER BY test_id")
    return read_sql(con, run, sql, {"run": run, "method": method, "ckpt": ckpt, "k": k},
                    None if in_table else score_files(con, run, method, ckpt))


def _has_scores(con, run: str, method: str, checkpoint: int) -> bool:
    sql = "SELECT count(*) FROM score_sets WHERE run_id = ? AND method = ? AND checkpoint = ?"
    return bool(fetch_one(con, sql, [run, method, int(checkpoint)]))


# What a leaderboard asks for: every (run, method, checkpoint) with its k (``req``), the stored metrics rows that
# answer it (``stored``), and the score sets left to compute (``todo``, with the ranks kept in topk).
_REQUEST_CTES = """
req AS (
    SELECT c.run_id, c.method, c.checkpoint,
           CAST(least(greatest(coalesce($k, r.k_default), 1), greatest(r.n_train, 1)) AS INTEGER) AS k
    FROM (SELECT run_id, method, checkpoint FROM score_sets
          UNION SELECT run_id, method, checkpoint FROM metrics) c
    JOIN runs r USING (run_id)
    WHERE $run IS NULL OR c.run_id = $run
),
stored AS (
    SELECT q.run_id, q.method, q.checkpoint, q.k, m.acc, m.coverage, m.auprc, m.chance_acc, m.chance_coverage,
           m.best_coverage, CAST(m.n_distinct_top1 AS BIGINT) AS n_distinct_top1, 'stored' AS source,
           m.acc_lo, m.acc_hi, m.coverage_lo, m.coverage_hi
    FROM req q JOIN metrics m USING (run_id, method, checkpoint, k)
    QUALIFY row_number() OVER (PARTITION BY q.run_id, q.method, q.checkpoint) = 1
),
todo AS (
    SELECT q.run_id, q.method, q.checkpoint, q.k, s.top_k FROM req q JOIN score_sets s USING (run_id, method, checkpoint)
    WHERE NOT EXISTS (SELECT 1 FROM stored s
                      WHERE s.run_id = q.run_id AND s.method = q.method AND s.checkpoint = q.checkpoint)
)
"""


# Per test sample of every set in ``ranked``: how many of its top k share its label (n_same), whether the first
# does (top1_same), and which it is (top1).
_PER_TEST_CTE = """
per_test AS (
    SELECT r.run_id, r.method, r.checkpoint, r.test_id, any_value(r.k) AS k, any_value(te.label) AS test_label,
           count(*) FILTER (WHERE tr.label = te.label) AS n_same,
           coalesce(bool_or(r.rnk = 1 AND tr.label = te.label), false) AS top1_same,
           any_value(r.train_id) FILTER (WHERE r.rnk = 1) AS top1
    FROM ranked r
    LEFT JOIN samples te ON te.run_id = r.run_id AND te.split = 'test' AND te.sample_id = r.test_id
    LEFT JOIN samples tr ON tr.run_id = r.run_id AND tr.split = 'train' AND tr.sample_id = r.train_id
    GROUP BY r.run_id, r.method, r.checkpoint, r.test_id
)
"""


_COMPUTED_SELECT = """
label_n AS (
    SELECT run_id, label, count(*) AS n FROM samples
    WHERE split = 'train' AND run_id IN (SELECT run_id FROM todo) GROUP BY run_id, label
),
computed AS (
    -- integer sums divided once: exact, so the result does not depend on the order of parallel aggregation
    SELECT p.run_id, p.method, p.checkpoint, any_value(p.k) AS k,
           count_if(p.top1_same) / count(*) AS acc,
           sum(p.n_same) / (count(*) * any_value(p.k)) AS coverage,
           sum(coalesce(l.n, 0)) / (count(*) * greatest(any_value(rn.n_train), 1)) AS chance_acc,
           count(DISTINCT p.top1) AS n_distinct_top1,
           sum(least(coalesce(l.n, 0), p.k)) / (count(*) * any_value(p.k)) AS best_coverage
    FROM per_test p
    JOIN runs rn ON rn.run_id = p.run_id
    LEFT JOIN label_n l ON l.run_id = p.run_id AND l.label = p.test_label
    GROUP BY p.run_id, p.method, p.checkpoint
),
auprc AS (
    SELECT run_id, method, checkpoint, any_value(auprc) AS auprc FROM metrics
    WHERE run_id IN (SELECT run_id FROM todo) GROUP BY run_id, method, checkpoint
)
SELECT c.run_id, c.method, c.checkpoint, c.k, c.acc, c.coverage, a.auprc, c.chance_acc,
       c.chance_acc AS chance_coverage, c.best_coverage, c.n_distinct_top1, 'computed' AS source,
       NULL::DOUBLE AS acc_lo, NULL::DOUBLE AS acc_hi, NULL::DOUBLE AS coverage_lo, NULL::DOUBLE AS coverage_hi
FROM computed c LEFT JOIN auprc a USING (run_id, method, checkpoint)
ORDER BY run_id, method, checkpoint
"""


def _computed(con, todo: list[tuple]) -> pd.DataFrame:
    """The computed leaderboard rows of ``todo`` (run_id, method, checkpoint, k, top_k): the sets whose k is within
    their stored ranks in one query over ``topk``, each other set in place from its score files."""
    parts = []
    small = [t for t in todo if t[3] <= t[4]]
    if small:
        lists = {"runs": [t[0] for t in small], "methods": [t[1] for t in small], "ckpts": [t[2] for t in small],
                 "ks": [t[3] for t in small]}
        sql = ("WITH todo AS (SELECT unnest($runs) AS run_id, unnest($methods) AS method, "
               "CAST(unnest($ckpts) AS INTEGER) AS checkpoint, CAST(unnest($ks) AS INTEGER) AS k), "
               f"{ranked_cte(True)}, {_PER_TEST_CTE}, {_COMPUTED_SELECT}")
        parts.append(fetch_df(con, sql, lists))
    for run, method, ckpt, k, _ in (t for t in todo if t[3] > t[4]):
        sql = f"WITH {todo_one()}, {ranked_cte(False)}, {_PER_TEST_CTE}, {_COMPUTED_SELECT}"
        parts.append(read_sql(con, run, sql, {"run": run, "method": method, "ckpt": ckpt, "k": k},
                              score_files(con, run, method, ckpt)))
    return pd.concat(parts, ignore_index=True)
