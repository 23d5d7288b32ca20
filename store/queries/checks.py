"""The runs' numerical self-checks: one run's checks, and which runs fail some."""

from __future__ import annotations

import pandas as pd

from store.queries.common import fetch_df, require_run


def checks(con, run: str) -> pd.DataFrame:
    """The numerical self-checks of ``run`` (engine.evaluation.checks): kind, subject, checkpoint, metric, value, op,
    threshold, passed, note; failed rows first. Empty for runs without checks."""
    require_run(con, run)
    return fetch_df(con, 'SELECT * EXCLUDE (run_id) FROM checks WHERE run_id = ? '
                         'ORDER BY passed, kind, checkpoint, subject, metric', [run])


def check_status(con) -> pd.DataFrame:
    """Per run that has self-checks: run_id, n_checks, n_failed, failed (the failed checks named, comma-separated)."""
    return fetch_df(
        con,
        """
        SELECT run_id, count(*) AS n_checks, count(*) FILTER (WHERE NOT passed) AS n_failed,
               coalesce(string_agg(DISTINCT kind || ' ' || subject, ', ' ORDER BY kind || ' ' || subject)
                        FILTER (WHERE NOT passed), '') AS failed
        FROM checks GROUP BY run_id ORDER BY run_id
        """,
    )
