"""Widgets shared by the three analysis pages (iHVP error, Convergence, Retraining)."""

from __future__ import annotations

from typing import Callable

import streamlit as st

import store
from engine.catalog.analyses import ANALYSIS_CATALOG
from ui.common import cursor, esc, pick_run, qp_get, qp_set


def needs_stage(con, run: str, stage: str) -> bool:
    """True when ``run`` has the analysis ``stage``; otherwise say how to get it and return False."""
    have = store.analyses(con, run)
    if stage in have:
        return True
    st.info(f"Run {esc(run)} has no results of {ANALYSIS_CATALOG[stage].how_to}. Runs made with the `quick` preset (the demo) "
            f"include it; for another spec add `analysis: {{stages: [{stage}]}}` or run it with "
            f"`python -m engine run SPEC.yaml --analyses {stage}`.")
    return False


def pick_choice(label: str, key: str, options: list, default, cast=str, fmt: Callable | None = None):
    """A selectbox bound to the query parameter ``key`` (unknown or malformed values fall back to ``default``)."""
    wanted = qp_get(key, default, cast)
    index = options.index(wanted) if wanted in options else (options.index(default) if default in options else 0)
    value = st.selectbox(label, options, index=index, key=f"pick_{key}", format_func=fmt or str)
    qp_set(**{key: value})
    return value


def analysis_page(stage: str, show: Callable) -> None:
    """The body every analysis page shares: pick a run, check it has ``stage``, call ``show(con, run)``."""
    try:
        con = cursor()
        run = pick_run(con)
        if run is not None and needs_stage(con, run, stage):
            show(con, run)
    except store.StoreError as e:
        st.error(f"The store could not be read: {e}")
