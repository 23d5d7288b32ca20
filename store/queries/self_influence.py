"""Self-influence: each training sample's score for itself (large = the model memorised it), per method and
checkpoint."""

from __future__ import annotations

import pandas as pd

from store.errors import NotFoundError
from store.queries.common import fetch_df, fetch_one, require_run
from store.schema import rank_key


def self_influence_sets(con, run: str) -> pd.DataFrame:
    """The (method, checkpoint) pairs that have self-influence scores in ``run`` (empty for older runs)."""
    require_run(con, run)
    return fetch_df(con, "SELECT DISTINCT method, checkpoint FROM self_influence WHERE run_id = ? "
                         "ORDER BY method, checkpoint", [run])


def self_influence(con, run: str, method: str, checkpoint: int) -> pd.DataFrame:
    """Every training sample's self-influence s(z_i, z_i) under ``method``, ranked (largest first, the one ranking
    key): rank, train_id, score, label, prompt, response. Raises LookupError when there is none."""
    require_run(con, run)
    sql = "SELECT count(*) FROM self_influence WHERE run_id = ? AND method = ? AND checkpoint = ?"
    if not fetch_one(con, sql, [run, method, int(checkpoint)]):
        have = self_influence_sets(con, run)
        sets = ", ".join(f"{m} at checkpoint {c}" for m, c in zip(have.method, have.checkpoint))
        raise NotFoundError(f"run {run!r} has no self-influence of method {method!r} at checkpoint {checkpoint!r}; "
                            "it has: " + (sets or "none (a run written before self-influence, or without gradient "
                                                  "methods)"))
    return fetch_df(
        con,
        f"""
        SELECT row_number() OVER (ORDER BY {rank_key("s")} DESC) AS rank, s.train_id, s.score, tr.label,
               tr.prompt, tr.response
        FROM self_influence s
        LEFT JOIN samples tr ON tr.run_id = s.run_id AND tr.split = 'train' AND tr.sample_id = s.train_id
        WHERE s.run_id = $run AND s.method = $method AND s.checkpoint = $ckpt
        ORDER BY rank
        """,
        {"run": run, "method": method, "ckpt": int(checkpoint)},
    )
