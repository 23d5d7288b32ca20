"""The analysis stages (iHVP error, convergence, retraining): which a run has, their tables, and the retraining
summaries the Retraining page draws."""

from __future__ import annotations

import pandas as pd

from engine.runfolder import runformat
from store.errors import QueryError
from store.queries.common import fetch_df, fetch_one, require_run

# analysis stage -> the tables it fills, in declaration order (the run-folder format's ``by``); the app asks
# which stages a run has. Display order of each table: its ``display_order``.
ANALYSIS_STAGES: dict[str, tuple[str, ...]] = {}
for _name in runformat.ANALYSIS_TABLES:
    ANALYSIS_STAGES.setdefault(runformat.TABLES[_name].by, ())
    ANALYSIS_STAGES[runformat.TABLES[_name].by] += (_name,)


def analyses(con, run: str) -> list[str]:
    """The analysis stages (``ihvp``, ``convergence``, ``retrain``) that have rows in ``run``."""
    require_run(con, run)
    out = []
    for stage, tables in ANALYSIS_STAGES.items():
        # table names are our constants (ANALYSIS_STAGES), never user input
        if fetch_one(con, f"SELECT count(*) FROM (SELECT 1 FROM {tables[0]} WHERE run_id = ? LIMIT 1)", [run]):
            out.append(stage)
    return out


def analysis_table(con, run: str, table: str) -> pd.DataFrame:
    """All rows of one analysis table for ``run`` (without run_id), in a stable order.

    ``table``: one of the tables in :data:`ANALYSIS_STAGES` (a :class:`QueryError` otherwise)."""
    if table not in runformat.ANALYSIS_TABLES:
        raise QueryError(f"unknown analysis table {table!r}; valid: {', '.join(runformat.ANALYSIS_TABLES)}")
    require_run(con, run)
    order = ", ".join(runformat.TABLES[table].display_order)  # our constants, never user input
    df = fetch_df(con, f"SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = ? ORDER BY {order}", [run])
    return df


def retrain_noise(con, run: str) -> pd.DataFrame:
    """The noise floor of every group-level change: one row per measure (mean_abs_dloss, kl_mean,
    abs_behaviour_change, param_change) with ``floor`` = the largest |value| over the noise retrainings (the full
    set with other data-order seeds), ``mean`` = their mean |value| and ``n_seeds``. Empty without noise rows."""
    require_run(con, run)
    return fetch_df(
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
    removal beats every random draw (``beats_random``; ``n_beats`` of them), the fewest random draws on a prompt
    (``n_random``), the mean rank among them, the binomial p over the prompts, and the share inside the noise
    floor. (rank and binom_p are NULL for run folders written before them.)"""
    require_run(con, run)
    return fetch_df(
        con,
        """
        SELECT method, count(*) AS n_prompts, any_value(k) AS k, avg(dloss) AS topk_dloss,
               avg(random_mean) AS random_dloss, avg(dloss - random_mean) AS gain,
               avg(CASE WHEN beats_random THEN 1.0 ELSE 0.0 END) AS beats_random,
               sum(CASE WHEN beats_random THEN 1 ELSE 0 END) AS n_beats, min(n_random) AS n_random,
               avg(rank) AS mean_rank, any_value(binom_p) AS binom_p,
               avg(CASE WHEN within_noise THEN 1.0 WHEN within_noise IS NULL THEN NULL ELSE 0.0 END) AS within_noise
        FROM retrain_counterfactual WHERE run_id = ? GROUP BY method ORDER BY gain DESC, method
        """,
        [run],
    )


def retrain_points(con, run: str) -> pd.DataFrame:
    """Predicted vs actual output change per (method, group, test sample): method, group_id, kind, test_id,
    test label, predicted (sum of the removed samples' scores), dloss (actual change of the test loss), kl,
    noise_floor (that test sample's) and within_noise."""
    require_run(con, run)
    return fetch_df(
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
