"""Read-only queries for the app. Each takes a connection (or a :class:`~store.db.Store`) and returns a pandas
DataFrame or a plain value. Every user value goes in as a query parameter.

Ranking convention (same as ``engine.evaluation.metrics``): training samples are ranked by score descending, ties broken by
the lowest ``train_id``; NaN scores rank last. Unknown runs, methods, checkpoints or samples raise a subclass of
:class:`LookupError` (:class:`~store.errors.NotFoundError`) whose message names what was asked for; a bad
argument (k that is not a positive integer, an unknown analysis table) raises :class:`~store.errors.QueryError`.
Both are :class:`~store.errors.StoreError`, which the CLI and the pages show as a message.
"""

from __future__ import annotations

import json
import os
import re

import duckdb
import numpy as np
import pandas as pd

from engine.evaluation.metrics import bootstrap_ci
from engine.runfolder import runformat
from store.errors import (
    NotFoundError,
    QueryError,
    RunFilesError,
    UnknownCheckpointError,
    UnknownMethodError,
    UnknownRunError,
    UnknownSampleError,
)


def _rank_key(alias: str = "") -> str:
    """The ranking rule of ``engine.evaluation.metrics.ranking`` as ONE SQL sort key (constant text, never user data):
    larger key = ranked higher. ``(NOT isnan(score), score, -train_id)``: a real score above NaN, then the score,
    then the lower train_id. Used as ``ORDER BY key DESC``, as the ``max_by`` key, and compared with ``>``."""
    p = f"{alias}." if alias else ""
    return f"(NOT isnan({p}score), {p}score, -{p}train_id)"


# ---------------------------------------------------------------------------------------------- runs


def list_runs(con) -> pd.DataFrame:
    """One row per ingested run, newest first: run_id, kind, model, task, status, created, n_train, n_test,
    k_default, labels (list), methods / checkpoints (comma-separated text), folder, ingested_at."""
    df = _df(
        con,
        """
        SELECT r.run_id, r.kind, r.model, r.task, r.status, r.created, r.n_train, r.n_test, r.k_default,
               r.labels_json,
               (SELECT string_agg(DISTINCT s.method, ', ' ORDER BY s.method) FROM score_sets s
                 WHERE s.run_id = r.run_id) AS methods,
               (SELECT string_agg(DISTINCT CAST(s.checkpoint AS VARCHAR), ', ' ORDER BY CAST(s.checkpoint AS VARCHAR))
                  FROM score_sets s WHERE s.run_id = r.run_id) AS checkpoints,
               r.folder, r.ingested_at
        FROM runs r ORDER BY r.created DESC NULLS LAST, r.run_id
        """,
    )
    df.insert(9, "labels", [_loads(v, []) for v in df.pop("labels_json")])
    return df


def run_info(con, run: str) -> dict:
    """Everything known about one run: the ``runs`` columns with spec/labels/versions parsed from JSON, plus
    ``methods``, ``checkpoints``, ``n_scores`` and ``stored_k`` (the ranks per test prompt kept in ``topk``).
    Raises :class:`UnknownRunError`."""
    _require_run(con, run)
    df = _df(con, "SELECT * FROM runs WHERE run_id = ?", [run])
    info = {k: _plain(v) for k, v in df.iloc[0].items()}
    for key in ("spec", "labels", "versions"):
        info[key] = _loads(info.pop(f"{key}_json"), None)
    info["methods"] = methods(con, run)
    info["checkpoints"] = checkpoints(con, run)
    info["n_scores"] = int(_one(con, "SELECT coalesce(sum(n_rows), 0) FROM score_sets WHERE run_id = ?", [run]))
    # how many ranks per test prompt the topk table holds for every score set (None without scores)
    info["stored_k"] = _one(con, "SELECT min(top_k) FROM score_sets WHERE run_id = ?", [run])
    return info


def methods(con, run: str) -> list[str]:
    """Methods that have scores in ``run``, sorted."""
    _require_run(con, run)
    rows = _c(con).execute("SELECT DISTINCT method FROM score_sets WHERE run_id = ? ORDER BY method", [run]).fetchall()
    return [r[0] for r in rows]


def checkpoints(con, run: str, method: str | None = None) -> list[int]:
    """Checkpoints (epochs; 0 = imported) that have scores in ``run`` (for ``method`` if given), sorted."""
    _require_run(con, run)
    if method is not None:
        _require_method(con, run, method)
    rows = _c(con).execute(
        "SELECT DISTINCT checkpoint FROM score_sets WHERE run_id = $run AND ($method IS NULL OR method = $method) "
        "ORDER BY checkpoint",
        {"run": run, "method": method},
    ).fetchall()
    return [int(r[0]) for r in rows]


def summary(con) -> dict:
    """Counts for the home page: runs, samples, scores, methods, score_sets, last_ingested."""
    c = _c(con)
    runs, last = c.execute("SELECT count(*), max(ingested_at) FROM runs").fetchone()
    n_scores, n_methods, n_sets = c.execute(
        "SELECT coalesce(sum(n_rows), 0), count(DISTINCT method), count(*) FROM score_sets"
    ).fetchone()
    n_samples = c.execute("SELECT count(*) FROM samples").fetchone()[0]
    return {
        "runs": int(runs), "samples": int(n_samples), "scores": int(n_scores), "methods": int(n_methods),
        "score_sets": int(n_sets), "last_ingested": last,
    }


# ---------------------------------------------------------------------------------------------- metrics


def leaderboard(con, run: str | None = None, k: int | None = None) -> pd.DataFrame:
    """One row per (run, method, checkpoint): k, acc, coverage, auprc, chance_acc, chance_coverage,
    best_coverage, n_distinct_top1, source, and acc_lo/acc_hi, coverage_lo/coverage_hi: 95 % bootstrap
    intervals over the test samples (NaN only for a run that has metrics but no scores).

    ``k`` None: each run's ``k_default``. The stored metrics row for that k is used when there is one
    (``source = 'stored'``); otherwise (a custom k) everything but AUPRC is computed in SQL from the rankings
    (``source = 'computed'``): from ``topk`` when k is within the stored ranks, else from the score files in
    place. coverage@k = sum over test samples of same-label training samples among its top k / (n_test * k);
    best_coverage = mean of min(k, #same-label train) / k; chance = mean share of same-label training samples.
    k is clipped to [1, n_train].
    """
    if run is not None:
        _require_run(con, run)
    if k is not None:
        k = _positive(k, "k")
    stored = _df(con, f"WITH {_REQUEST_CTES} SELECT * FROM stored ORDER BY run_id, method, checkpoint",
                 {"run": run, "k": k})
    todo = _c(con).execute(f"WITH {_REQUEST_CTES} SELECT * FROM todo ORDER BY run_id, method, checkpoint",
                           {"run": run, "k": k}).fetchall()
    df = pd.concat([stored, _computed(con, todo)], ignore_index=True) if todo else stored
    df = df.sort_values(["run_id", "method", "checkpoint"], kind="stable").reset_index(drop=True)
    # intervals: stored with the metrics by the pipeline; for a custom k (or a run written before intervals)
    # bootstrapped here from the per-test hits, with the same rule (engine.evaluation.metrics.bootstrap_ci)
    for i in df.index[df.acc_lo.isna()]:
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
    stored = _require_scores(con, run, method, checkpoint)
    k = _positive(k, "k")
    ckpt = int(checkpoint)
    in_table = k <= stored
    sql = (f"WITH {_todo_one()}, {_ranked_cte(in_table)}, {_PER_TEST_CTE} "
           "SELECT test_id, top1_same, n_same FROM per_test ORDER BY test_id")
    return _read(con, run, sql, {"run": run, "method": method, "ckpt": ckpt, "k": k},
                 None if in_table else _score_files(con, run, method, ckpt))


def _has_scores(con, run: str, method: str, checkpoint: int) -> bool:
    return bool(_one(con, "SELECT count(*) FROM score_sets WHERE run_id = ? AND method = ? AND checkpoint = ?",
                     [run, method, int(checkpoint)]))


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


def _todo_one() -> str:
    """CTE ``todo`` of one score set (``$run``, ``$method``, ``$ckpt``) at ``$k``."""
    return ("todo AS (SELECT CAST($run AS VARCHAR) AS run_id, CAST($method AS VARCHAR) AS method, "
            "CAST($ckpt AS INTEGER) AS checkpoint, CAST($k AS INTEGER) AS k)")


def _ranked_cte(in_table: bool) -> str:
    """CTE ``ranked`` (run_id, method, checkpoint, test_id, k, train_id, rnk): the top k training samples of every
    test prompt of the score sets in ``todo`` (run_id, method, checkpoint, k), by the one ranking key.

    ``in_table``: read ``topk`` (every set of ``todo`` has k <= its stored ranks). Otherwise ``todo`` is ONE set
    whose score files are ``$files``, ranked in place (``max_by`` with n: a heap of k per test prompt)."""
    if in_table:
        return """ranked AS (
    SELECT t.run_id, t.method, t.checkpoint, tk.test_id, t.k, tk.train_id, tk.rank AS rnk
    FROM todo t JOIN topk tk ON tk.run_id = t.run_id AND tk.method = t.method AND tk.checkpoint = t.checkpoint
    WHERE tk.rank <= t.k
)"""
    return f"""tops AS (
    SELECT test_id, max_by(train_id, {_rank_key()}, $k) AS top FROM {_in_place()} GROUP BY test_id
),
ranked AS (
    SELECT t.run_id, t.method, t.checkpoint, tops.test_id, t.k, unnest(tops.top) AS train_id,
           generate_subscripts(tops.top, 1) AS rnk
    FROM tops, todo t
)"""


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
               f"{_ranked_cte(True)}, {_PER_TEST_CTE}, {_COMPUTED_SELECT}")
        parts.append(_df(con, sql, lists))
    for run, method, ckpt, k, _ in (t for t in todo if t[3] > t[4]):
        sql = f"WITH {_todo_one()}, {_ranked_cte(False)}, {_PER_TEST_CTE}, {_COMPUTED_SELECT}"
        parts.append(_read(con, run, sql, {"run": run, "method": method, "ckpt": ckpt, "k": k},
                           _score_files(con, run, method, ckpt)))
    return pd.concat(parts, ignore_index=True)


def label_metrics(con, run: str, method: str | None = None, checkpoint: int | None = None) -> pd.DataFrame:
    """Per-label acc/coverage rows of ``run`` (optionally one method and/or checkpoint)."""
    _require_run(con, run)
    return _df(
        con,
        "SELECT method, checkpoint, k, label, n_test, acc, coverage FROM label_metrics "
        "WHERE run_id = $run AND ($method IS NULL OR method = $method) AND ($ckpt IS NULL OR checkpoint = $ckpt) "
        "ORDER BY method, checkpoint, k, label",
        {"run": run, "method": method, "ckpt": _opt_int(checkpoint)},
    )


def agreement(con, run: str, checkpoint: int | None = None) -> pd.DataFrame:
    """Method-pair agreement rows (mean Spearman per test sample, top-k overlap) of ``run``."""
    _require_run(con, run)
    return _df(
        con,
        "SELECT checkpoint, method_a, method_b, k, spearman, overlap FROM agreement "
        "WHERE run_id = $run AND ($ckpt IS NULL OR checkpoint = $ckpt) ORDER BY checkpoint, method_a, method_b, k",
        {"run": run, "ckpt": _opt_int(checkpoint)},
    )


def train_loss(con, run: str) -> pd.DataFrame:
    """Training loss curve of ``run``: epoch, step, loss (empty for imported runs)."""
    _require_run(con, run)
    return _df(con, "SELECT epoch, step, loss FROM train_loss WHERE run_id = ? ORDER BY step, epoch", [run])


# ---------------------------------------------------------------------------------------------- analyses

# analysis stage -> the tables it fills, in declaration order (the run-folder format's ``by``); the app asks
# which stages a run has. Display order of each table: its ``display_order``.
ANALYSIS_STAGES: dict[str, tuple[str, ...]] = {}
for _name in runformat.ANALYSIS_TABLES:
    ANALYSIS_STAGES.setdefault(runformat.TABLES[_name].by, ())
    ANALYSIS_STAGES[runformat.TABLES[_name].by] += (_name,)


def analyses(con, run: str) -> list[str]:
    """The analysis stages (``ihvp``, ``convergence``, ``retrain``) that have rows in ``run``."""
    _require_run(con, run)
    out = []
    for stage, tables in ANALYSIS_STAGES.items():
        # table names are our constants (ANALYSIS_STAGES), never user input
        if _one(con, f"SELECT count(*) FROM (SELECT 1 FROM {tables[0]} WHERE run_id = ? LIMIT 1)", [run]):
            out.append(stage)
    return out


def analysis_table(con, run: str, table: str) -> pd.DataFrame:
    """All rows of one analysis table for ``run`` (without run_id), in a stable order.

    ``table``: one of the tables in :data:`ANALYSIS_STAGES` (a :class:`QueryError` otherwise)."""
    if table not in runformat.ANALYSIS_TABLES:
        raise QueryError(f"unknown analysis table {table!r}; valid: {', '.join(runformat.ANALYSIS_TABLES)}")
    _require_run(con, run)
    order = ", ".join(runformat.TABLES[table].display_order)  # our constants, never user input
    df = _df(con, f"SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = ? ORDER BY {order}", [run])
    return df


def retrain_noise(con, run: str) -> pd.DataFrame:
    """The noise floor of every group-level change: one row per measure (mean_abs_dloss, kl_mean,
    abs_behaviour_change, param_change) with ``floor`` = the largest |value| over the noise retrainings (the full
    set with other data-order seeds), ``mean`` = their mean |value| and ``n_seeds``. Empty without noise rows."""
    _require_run(con, run)
    return _df(
        con,
        """
        SELECT measure, max(v) AS floor, avg(v) AS mean, count(v) AS n_seeds FROM (
            SELECT 'mean_abs_dloss' AS measure, abs(mean_abs_dloss) AS v FROM retrain_groups
                WHERE run_id = ? AND kind = 'noise'
            UNION ALL SELECT 'kl_mean', abs(kl_mean) FROM retrain_groups WHERE run_id = ? AND kind = 'noise'
            UNION ALL SELECT 'abs_behaviour_change', abs(behaviour_change) FROM retrain_groups
                WHERE run_id = ? AND kind = 'noise'
            UNION ALL SELECT 'param_change', abs(param_change) FROM retrain_groups WHERE run_id = ? AND kind = 'noise'
        ) WHERE v IS NOT NULL GROUP BY measure ORDER BY measure
        """,
        [run] * 4,
    )


def retrain_counterfactual_summary(con, run: str) -> pd.DataFrame:
    """Per method of the counterfactual check: n_prompts, mean dloss after removing its top k, mean dloss after
    the random k-removals on the same prompts, their difference (``gain``), the share of prompts where the top-k
    removal beats every random draw, and the share inside the noise floor."""
    _require_run(con, run)
    return _df(
        con,
        """
        SELECT method, count(*) AS n_prompts, any_value(k) AS k, avg(dloss) AS topk_dloss,
               avg(random_mean) AS random_dloss, avg(dloss - random_mean) AS gain,
               avg(CASE WHEN beats_random THEN 1.0 ELSE 0.0 END) AS beats_random,
               avg(CASE WHEN within_noise THEN 1.0 WHEN within_noise IS NULL THEN NULL ELSE 0.0 END) AS within_noise
        FROM retrain_counterfactual WHERE run_id = ? GROUP BY method ORDER BY gain DESC, method
        """,
        [run],
    )


def retrain_points(con, run: str) -> pd.DataFrame:
    """Predicted vs actual output change per (method, group, test sample): method, group_id, kind, test_id,
    test label, predicted (sum of the removed samples' scores), dloss (actual change of the test loss), kl,
    noise_floor (that test sample's) and within_noise."""
    _require_run(con, run)
    return _df(
        con,
        """
        SELECT p.method, p.group_id, g.kind, p.test_id, s.label, p.predicted, t.dloss, t.kl, t.noise_floor,
               t.within_noise
        FROM retrain_predictions p
        JOIN retrain_tests t ON t.run_id = p.run_id AND t.group_id = p.group_id AND t.test_id = p.test_id
        JOIN retrain_groups g ON g.run_id = p.run_id AND g.group_id = p.group_id
        LEFT JOIN samples s ON s.run_id = p.run_id AND s.split = 'test' AND s.sample_id = p.test_id
        WHERE p.run_id = ? ORDER BY p.method, p.group_id, p.test_id
        """,
        [run],
    )


# ---------------------------------------------------------------------------------------------- samples


def samples(
    con, run: str, split: str | None = None, label: str | None = None, search: str | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """Samples of ``run``: split, sample_id, prompt, response, label (train first, then test, by id).

    ``search``: case-insensitive substring of prompt or response; ``%``, ``_`` and ``\\`` match literally.
    """
    _require_run(con, run)
    pattern = None if not search else f"%{escape_like(search)}%"
    return _df(
        con,
        r"""
        SELECT split, sample_id, prompt, response, label FROM samples
        WHERE run_id = $run AND ($split IS NULL OR split = $split) AND ($label IS NULL OR label = $label)
          AND ($pat IS NULL OR prompt ILIKE $pat ESCAPE '\' OR response ILIKE $pat ESCAPE '\')
        ORDER BY split DESC, sample_id LIMIT $limit
        """,
        {"run": run, "split": split, "label": label, "pat": pattern,
         "limit": None if limit is None else _positive(limit, "limit")},
    )


def escape_like(text: str) -> str:
    """Escape ``\\``, ``%`` and ``_`` so ``text`` matches literally inside ``LIKE ... ESCAPE '\\'``."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# ---------------------------------------------------------------------------------------------- scores
# Pages read rankings (``topk``), one prompt's full row, or aggregates computed here; only :func:`score_matrix`
# (tests, benchmarks, the CLI) loads a whole matrix, and no page may call it.

# The score rows of one (method, checkpoint) read in place from its files ``$files``; filters go on the raw file
# columns, so DuckDB prunes row groups by their statistics (a merged file's row group holds whole prompts).
_IN_PLACE_SQL = ("(SELECT CAST(test_id AS INTEGER) AS test_id, CAST(train_id AS INTEGER) AS train_id, "
                 "CAST(score AS FLOAT) AS score FROM read_parquet($files) "
                 "WHERE method = $method AND checkpoint = $ckpt{where})")


def _in_place(where: str = "") -> str:
    """The in-place relation, with more conditions on the raw columns (``where``: constant text + parameters)."""
    return _IN_PLACE_SQL.format(where=where)


def top_k(con, run: str, method: str, checkpoint: int, test_id: int, k: int) -> pd.DataFrame:
    """The ``k`` training samples ranked highest for one test sample: rank (1-based), train_id, score, prompt,
    response, label, same_label (train label == test label). Ties: lowest train_id first. From ``topk`` when k is
    within the stored ranks, else from the score files in place (one prompt's rows)."""
    stored = _require_scores(con, run, method, checkpoint)
    _require_sample(con, run, "test", test_id)
    ckpt, k = int(checkpoint), _positive(k, "k")
    in_table = k <= stored
    if in_table:
        ranked = ("(SELECT rank, train_id, score FROM topk WHERE run_id = $run AND method = $method "
                  "AND checkpoint = $ckpt AND test_id = $test AND rank <= $k)")
    else:
        ranked = (f"(SELECT CAST(row_number() OVER (ORDER BY {_rank_key()} DESC) AS INTEGER) AS rank, train_id, "
                  f"score FROM (SELECT train_id, score FROM {_in_place(' AND test_id = $test')} "
                  f"ORDER BY {_rank_key()} DESC LIMIT $k))")
    sql = f"""
        SELECT s.rank, s.train_id, s.score, tr.prompt, tr.response, tr.label,
               coalesce(tr.label = te.label, false) AS same_label
        FROM {ranked} s
        LEFT JOIN samples tr ON tr.run_id = $run AND tr.split = 'train' AND tr.sample_id = s.train_id
        LEFT JOIN samples te ON te.run_id = $run AND te.split = 'test' AND te.sample_id = $test
        ORDER BY s.rank
        """
    params = {"run": run, "method": method, "ckpt": ckpt, "test": _integer(test_id, "test_id"), "k": k}
    return _read(con, run, sql, params, None if in_table else _score_files(con, run, method, ckpt))


def score_row(con, run: str, method: str, checkpoint: int, test_id: int) -> np.ndarray:
    """One test sample's scores over every training sample: float32 ``[n_train]`` in training sample-id order
    (NaN where a score is missing), i.e. row ``test_id`` of :func:`score_matrix`, read in place from the run
    folder (one row group of a merged score file)."""
    _require_scores(con, run, method, checkpoint)
    _require_sample(con, run, "test", test_id)
    ckpt = int(checkpoint)
    sql = f"SELECT train_id, score FROM {_in_place(' AND test_id = $test')}"
    got = _read(con, run, sql, {"method": method, "ckpt": ckpt, "test": _integer(test_id, "test_id")},
                _score_files(con, run, method, ckpt), numpy=True)
    train_ids = _ids(con, run, "train")
    out = np.full(len(train_ids), np.nan, dtype=np.float32)
    cols, ok = _positions(train_ids, got["train_id"])
    out[cols[ok]] = np.asarray(got["score"], dtype=np.float32)[ok]
    return out


def score_matrix(con, run: str, method: str, checkpoint: int) -> np.ndarray:
    """The dense float32 score matrix ``[n_test, n_train]`` (rows/columns in sample-id order; NaN where a
    score is missing), read from the score files in place. Loads every score of that method and checkpoint into
    memory: for tests, benchmarks and the CLI, never for a page (they use :func:`top_k`, :func:`score_row` and
    the aggregates)."""
    _require_scores(con, run, method, checkpoint)
    ckpt = int(checkpoint)
    test_ids = _ids(con, run, "test")
    train_ids = _ids(con, run, "train")
    got = _read(con, run, f"SELECT test_id, train_id, score FROM {_in_place()}", {"method": method, "ckpt": ckpt},
                _score_files(con, run, method, ckpt), numpy=True)
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
    _require_scores(con, run, method, checkpoint)
    return _df(
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
    stored = _require_scores(con, run, method, checkpoint)
    ckpt, k = int(checkpoint), _positive(k, "k")
    in_table = k <= stored
    sql = f"""
        WITH {_todo_one()}, {_ranked_cte(in_table)},
        counts AS (SELECT train_id, count(*) AS n, count(*) FILTER (WHERE rnk = 1) AS n_top1 FROM ranked
                   GROUP BY train_id)
        SELECT tr.sample_id AS train_id, coalesce(c.n, 0) AS n, coalesce(c.n_top1, 0) AS n_top1
        FROM samples tr LEFT JOIN counts c ON c.train_id = tr.sample_id
        WHERE tr.run_id = $run AND tr.split = 'train'
        ORDER BY train_id
        """
    return _read(con, run, sql, {"run": run, "method": method, "ckpt": ckpt, "k": k},
                 None if in_table else _score_files(con, run, method, ckpt))


def test_prompts_ranking_train(con, run: str, method: str, checkpoint: int, train_id: int, k: int) -> pd.DataFrame:
    """Test samples that have training sample ``train_id`` in their top ``k``: test_id, rank (of the training
    sample for that test sample), score, prompt, response, label, same_label; best rank first. From ``topk`` when
    k is within the stored ranks, else from the score files in place (a scan of the whole score set)."""
    stored = _require_scores(con, run, method, checkpoint)
    _require_sample(con, run, "train", train_id)
    ckpt, k = int(checkpoint), _positive(k, "k")
    in_table = k <= stored
    if in_table:
        ranks = ("ranks AS (SELECT test_id, rank, score FROM topk WHERE run_id = $run AND method = $method "
                 "AND checkpoint = $ckpt AND train_id = $train AND rank <= $k)")
    else:
        ranks = f"""blk AS (SELECT * FROM {_in_place()}),
        t AS (SELECT test_id, train_id, score FROM blk WHERE train_id = $train),
        ranks AS (  -- 1 + how many training samples rank above it, by the one ranking key
            SELECT t.test_id, any_value(t.score) AS score,
                   1 + count(*) FILTER (WHERE {_rank_key("b")} > {_rank_key("t")}) AS rank
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
    params = {"run": run, "method": method, "ckpt": ckpt, "train": _integer(train_id, "train_id"), "k": k}
    return _read(con, run, sql, params, None if in_table else _score_files(con, run, method, ckpt))


def test_agreement(con, run: str, checkpoint: int, method_a: str, method_b: str) -> pd.DataFrame:
    """Per test sample, how far two methods agree at ``checkpoint``: test_id, spearman (of their score rows),
    overlap (of their top k), k; test_id order. As the run stored it (``engine.evaluation.metrics.agreement``; the pair in
    either order). Empty when the run holds no such rows (written before per-test agreement was stored, or a
    method paired with itself)."""
    _require_run(con, run)
    return _df(
        con,
        "SELECT test_id, spearman, overlap, k FROM test_agreement WHERE run_id = $run AND checkpoint = $ckpt "
        "AND ((method_a = $a AND method_b = $b) OR (method_a = $b AND method_b = $a)) "
        "QUALIFY k = min(k) OVER () ORDER BY test_id",
        {"run": run, "ckpt": _integer(checkpoint, "checkpoint"), "a": method_a, "b": method_b},
    )


# ---------------------------------------------------------------------------------------------- helpers


def _c(con) -> duckdb.DuckDBPyConnection:
    """Accept a connection, a cursor or a Store."""
    return getattr(con, "con", con)


def _df(con, sql: str, params=None) -> pd.DataFrame:
    return _c(con).execute(sql, params if params is not None else []).df()


def _one(con, sql: str, params):
    return _c(con).execute(sql, params).fetchone()[0]


def _require_run(con, run: str) -> None:
    if not isinstance(run, str) or _one(con, "SELECT count(*) FROM runs WHERE run_id = ?", [run]) == 0:
        raise UnknownRunError(run)


def _require_method(con, run: str, method: str) -> None:
    if _one(con, "SELECT count(*) FROM score_sets WHERE run_id = ? AND method = ?", [run, method]) == 0:
        raise UnknownMethodError(run, method, methods(con, run))


def _require_scores(con, run: str, method: str, checkpoint: int) -> int:
    """Raise unless ``run`` has scores for ``method`` at ``checkpoint``; return the ranks per test prompt its
    ``topk`` rows hold. One query on the common path; the failure path finds out what is unknown."""
    try:
        ckpt = int(checkpoint)
    except (TypeError, ValueError):
        ckpt = None
    if isinstance(run, str) and isinstance(method, str) and ckpt is not None:
        top = _one(con, "SELECT max(top_k) FROM score_sets WHERE run_id = ? AND method = ? AND checkpoint = ?",
                   [run, method, ckpt])
        if top is not None:
            return int(top)
    _require_run(con, run)
    _require_method(con, run, method)
    raise UnknownCheckpointError(run, method, checkpoint, checkpoints(con, run, method))


def _score_files(con, run: str, method: str, checkpoint: int) -> list[str]:
    """The score files holding a set's rows, checked to exist: :class:`RunFilesError` naming the run and a missing
    file when the run folder was moved or deleted after it was ingested."""
    rows = _c(con).execute("SELECT path FROM score_files WHERE run_id = ? AND method = ? AND checkpoint = ? "
                           "ORDER BY path", [run, method, int(checkpoint)]).fetchall()
    paths = [r[0] for r in rows]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise RunFilesError(run, f"its score file {missing[0]} is gone ({len(missing)} of {len(paths)} missing)")
    return paths


def _read(con, run: str, sql: str, params: dict, files: list[str] | None = None, numpy: bool = False):
    """Run ``sql`` with the parameters it names (``files``: the score files it reads in place, as ``$files``);
    a DataFrame, or a dict of numpy arrays with ``numpy``. A score file that cannot be read raises
    :class:`RunFilesError` naming the run, not a DuckDB error."""
    if files is not None:
        params = {**params, "files": files}
    used = set(re.findall(r"\$(\w+)", sql))
    params = {name: value for name, value in params.items() if name in used}
    try:
        result = _c(con).execute(sql, params)
        return result.fetchnumpy() if numpy else result.df()
    except (duckdb.IOException, duckdb.InvalidInputException) as e:
        if files is None:
            raise
        raise RunFilesError(run, f"its score files could not be read ({type(e).__name__}: {e})") from e


def _require_sample(con, run: str, split: str, sample_id: int) -> None:
    sql = "SELECT count(*) FROM samples WHERE run_id = ? AND split = ? AND sample_id = ?"
    if _one(con, sql, [run, split, _integer(sample_id, "sample_id")]) == 0:
        raise UnknownSampleError(run, split, sample_id)


def _ids(con, run: str, split: str) -> np.ndarray:
    """The sample ids of one split, sorted: 0..n-1 (ingest refuses a run whose ids are not)."""
    return np.arange(_one(con, "SELECT count(*) FROM samples WHERE run_id = ? AND split = ?", [run, split]),
                     dtype=np.int64)


def _integer(value, name: str) -> int:
    """``value`` as an int; a :class:`QueryError` naming the argument if it is not a whole number."""
    try:
        v = int(value)
    except (TypeError, ValueError, OverflowError):
        raise QueryError(f"{name} must be an integer, got {value!r}") from None
    if v != value and str(v) != str(value).strip():
        raise QueryError(f"{name} must be an integer, got {value!r}")
    return v


def _positive(value, name: str) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError, OverflowError):
        v = 0
    if v < 1 or v != value:
        raise QueryError(f"{name} must be a positive integer, got {value!r}")
    return v


def _opt_int(value, name: str = "checkpoint") -> int | None:
    return None if value is None else _integer(value, name)


def _loads(text, default):
    return default if text is None or (isinstance(text, float) and np.isnan(text)) else json.loads(text)


def _plain(value):
    """numpy/pandas scalars -> Python values (None for NaN/NaT)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value.item() if hasattr(value, "item") else value


# ---------------------------------------------------------------------------------------------- behaviours and groups

# Sample columns a group view may group by: the text columns of samples that describe a sample (the run-folder
# format's declaration: a column added there, e.g. an imported "source", is offered as it is declared).
GROUP_COLUMNS: tuple[str, ...] = tuple(
    c for c, t in runformat.TABLES["samples"].columns.items() if t == "str" and c not in ("split", "prompt", "response"))


def _test_ids(con, run: str, ids, what: str) -> list[int]:
    """``ids`` as a sorted list of distinct test ids of ``run``; ValueError naming the group if one is unknown."""
    try:
        wanted = sorted({int(i) for i in ids})
    except (TypeError, ValueError):
        raise ValueError(f"{what}: test ids must be integers, got {list(ids)!r}") from None
    known = set(_ids(con, run, "test").tolist())
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
    _require_scores(con, run, method, checkpoint)
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
            SELECT train_id, test_id, score FROM {_in_place(" AND test_id IN (SELECT unnest($tests))")}
        ),
        q AS (SELECT train_id, avg(score) AS m FROM blk WHERE test_id IN (SELECT unnest($query)) GROUP BY train_id),
        c AS (SELECT train_id, avg(score) AS m FROM blk WHERE test_id IN (SELECT unnest($control)) GROUP BY train_id),
        s AS (
            SELECT q.train_id, q.m AS query_mean, c.m AS control_mean,
                   CASE WHEN $has_control THEN q.m - c.m ELSE q.m END AS score
            FROM q LEFT JOIN c USING (train_id)
        )
        SELECT row_number() OVER (ORDER BY {_rank_key("s")} DESC) AS rank, s.train_id, s.score, s.query_mean,
               coalesce(s.control_mean, 'NaN'::DOUBLE) AS control_mean, tr.label, tr.prompt, tr.response
        FROM s LEFT JOIN samples tr ON tr.run_id = $run AND tr.split = 'train' AND tr.sample_id = s.train_id
        ORDER BY rank
        """
    params = {"run": run, "method": method, "ckpt": ckpt, "query": query, "control": control or [-1],
              "tests": query + control, "has_control": bool(control)}
    return _read(con, run, sql, params, _score_files(con, run, method, ckpt))


def group_influence(con, run: str, method: str, checkpoint: int, by: str = "label") -> pd.DataFrame:
    """Influence aggregated by groups of samples: one row per (training group, test group) of column ``by``
    (one of :data:`GROUP_COLUMNS`): total (sum of the scores of every pair), mean (per pair), positive (sum of the
    positive scores), share (that positive sum over the test group's positive sum over all training groups: how
    much of the test group's positive influence this training group holds), n_pairs, n_train, n_test. NaN scores
    are left out. Rows sorted by test group, then training group."""
    if by not in GROUP_COLUMNS:
        raise ValueError(f"cannot group by {by!r}; sample columns to group by: {', '.join(GROUP_COLUMNS)}")
    _require_scores(con, run, method, checkpoint)
    ckpt = int(checkpoint)
    # ``by`` is one of our constant column names (checked above), never user text; one pass over the score files
    sql = f"""
        WITH cells AS (
            SELECT tr.{by} AS train_group, te.{by} AS test_group, sum(s.score) AS total, avg(s.score) AS mean,
                   sum(greatest(s.score, 0)) AS positive, count(*) AS n_pairs,
                   count(DISTINCT s.train_id) AS n_train, count(DISTINCT s.test_id) AS n_test
            FROM {_in_place(" AND NOT isnan(score)")} s
            JOIN samples tr ON tr.run_id = $run AND tr.split = 'train' AND tr.sample_id = s.train_id
            JOIN samples te ON te.run_id = $run AND te.split = 'test' AND te.sample_id = s.test_id
            GROUP BY ALL
        )
        SELECT train_group, test_group, total, mean, positive,
               positive / nullif(sum(positive) OVER (PARTITION BY test_group), 0) AS share,
               n_pairs, n_train, n_test
        FROM cells ORDER BY test_group, train_group
        """
    return _read(con, run, sql, {"run": run, "method": method, "ckpt": ckpt}, _score_files(con, run, method, ckpt))


# ---------------------------------------------------------------------------------------------- self-influence, checks


def self_influence_sets(con, run: str) -> pd.DataFrame:
    """The (method, checkpoint) pairs that have self-influence scores in ``run`` (empty for older runs)."""
    _require_run(con, run)
    return _df(con, "SELECT DISTINCT method, checkpoint FROM self_influence WHERE run_id = ? ORDER BY method, "
                    "checkpoint", [run])


def self_influence(con, run: str, method: str, checkpoint: int) -> pd.DataFrame:
    """Every training sample's self-influence s(z_i, z_i) under ``method``, ranked (largest first, the one ranking
    key): rank, train_id, score, label, prompt, response. Raises LookupError when there is none."""
    _require_run(con, run)
    if not _one(con, "SELECT count(*) FROM self_influence WHERE run_id = ? AND method = ? AND checkpoint = ?",
                [run, method, int(checkpoint)]):
        have = self_influence_sets(con, run)
        raise NotFoundError(f"run {run!r} has no self-influence of method {method!r} at checkpoint {checkpoint!r}; "
                            "it has: " + (", ".join(f"{m} at checkpoint {c}" for m, c in zip(have.method,
                                                                                              have.checkpoint))
                                          or "none (a run written before self-influence, or without gradient "
                                             "methods)"))
    return _df(
        con,
        f"""
        SELECT row_number() OVER (ORDER BY {_rank_key("s")} DESC) AS rank, s.train_id, s.score, tr.label,
               tr.prompt, tr.response
        FROM self_influence s
        LEFT JOIN samples tr ON tr.run_id = s.run_id AND tr.split = 'train' AND tr.sample_id = s.train_id
        WHERE s.run_id = $run AND s.method = $method AND s.checkpoint = $ckpt
        ORDER BY rank
        """,
        {"run": run, "method": method, "ckpt": int(checkpoint)},
    )


def checks(con, run: str) -> pd.DataFrame:
    """The numerical self-checks of ``run`` (engine.evaluation.checks): kind, subject, checkpoint, metric, value, op,
    threshold, passed, note; failed rows first. Empty for runs without checks."""
    _require_run(con, run)
    return _df(con, 'SELECT * EXCLUDE (run_id) FROM checks WHERE run_id = ? '
                    'ORDER BY passed, kind, checkpoint, subject, metric', [run])


def check_status(con) -> pd.DataFrame:
    """Per run that has self-checks: run_id, n_checks, n_failed, failed (the failed checks named, comma-separated)."""
    return _df(
        con,
        """
        SELECT run_id, count(*) AS n_checks, count(*) FILTER (WHERE NOT passed) AS n_failed,
               coalesce(string_agg(DISTINCT kind || ' ' || subject, ', ' ORDER BY kind || ' ' || subject)
                        FILTER (WHERE NOT passed), '') AS failed
        FROM checks GROUP BY run_id ORDER BY run_id
        """,
    )
