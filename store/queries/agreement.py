"""How far methods agree: per method pair (mean Spearman, top-k overlap) and per test sample, as the run stored
them."""

from __future__ import annotations

import pandas as pd

from store.queries.common import fetch_df, integer, optional_int, require_run


def agreement(con, run: str, checkpoint: int | None = None) -> pd.DataFrame:
    """Method-pair agreement rows (mean Spearman per test sample, top-k overlap) of ``run``."""
    require_run(con, run)
    return fetch_df(
        con,
        "SELECT checkpoint, method_a, method_b, k, spearman, overlap FROM agreement "
        "WHERE run_id = $run AND ($ckpt IS NULL OR checkpoint = $ckpt) ORDER BY checkpoint, method_a, method_b, k",
        {"run": run, "ckpt": optional_int(checkpoint)},
    )


def test_agreement(con, run: str, checkpoint: int, method_a: str, method_b: str) -> pd.DataFrame:
    """Per test sample, how far two methods agree at ``checkpoint``: test_id, spearman (of their score rows),
    overlap (of their top k), k; test_id order. As the run stored it (``engine.evaluation.metrics.agreement``; the
    pair in either order). Empty when the run holds no such rows (written before per-test agreement was stored, or
    a method paired with itself)."""
    require_run(con, run)
    return fetch_df(
        con,
        "SELECT test_id, spearman, overlap, k FROM test_agreement WHERE run_id = $run AND checkpoint = $ckpt "
        "AND ((method_a = $a AND method_b = $b) OR (method_a = $b AND method_b = $a)) "
        "QUALIFY k = min(k) OVER () ORDER BY test_id",
        {"run": run, "ckpt": integer(checkpoint, "checkpoint"), "a": method_a, "b": method_b},
    )
