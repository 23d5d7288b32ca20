"""The samples of a run: filtered by split and label, searched literally in prompts and responses."""

from __future__ import annotations

import pandas as pd

from store.queries.common import fetch_df, positive, require_run


def samples(
    con, run: str, split: str | None = None, label: str | None = None, search: str | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """Samples of ``run``: split, sample_id, prompt, response, label (train first, then test, by id).

    ``search``: case-insensitive substring of prompt or response; ``%``, ``_`` and ``\\`` match literally.
    """
    require_run(con, run)
    pattern = None if not search else f"%{escape_like(search)}%"
    return fetch_df(
        con,
        r"""
        SELECT split, sample_id, prompt, response, label FROM samples
        WHERE run_id = $run AND ($split IS NULL OR split = $split) AND ($label IS NULL OR label = $label)
          AND ($pat IS NULL OR prompt ILIKE $pat ESCAPE '\' OR response ILIKE $pat ESCAPE '\')
        ORDER BY split DESC, sample_id LIMIT $limit
        """,
        {"run": run, "split": split, "label": label, "pat": pattern,
         "limit": None if limit is None else positive(limit, "limit")},
    )


def escape_like(text: str) -> str:
    """Escape ``\\``, ``%`` and ``_`` so ``text`` matches literally inside ``LIKE ... ESCAPE '\\'``."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
