"""Behaviour: attribute a whole behaviour (a group of test prompts), optionally against a control group, and see
which training groups explain which test groups.

No torch and no SQL here: everything comes from ``store`` through ``ui.common.cursor()``; the parts live in
``ui.behaviour``. State lives in the URL: ``run``, ``ckpt`` (shared with the other pages), ``method``, the query
group (``q_by``, ``q``), the control group (``c_by``, ``c``), ``by`` and ``metric`` (group view). Dataset text
reaches the screen through dataframes and plot labels only.
"""

from __future__ import annotations

import re

import pandas as pd
import streamlit as st

import store
from engine.catalog.methods import default_methods
from ui.auth import require_login
from ui.behaviour import GROUP_METRICS, concentration_panel, group_heatmap, label_bars, pick_group
from ui.common import cursor, esc, export_buttons, md, pick_checkpoint, pick_run, qp_get, qp_set
from ui.labels import NEEDS_LABELS

st.set_page_config(page_title="Behaviour · Influence Explorer", layout="wide")
require_login()

SHOWN = 50  # ranked rows shown (the export has all)


def pick_method(con, run: str, ck: int) -> str | None:
    names = [m for m in store.methods(con, run) if ck in store.checkpoints(con, run, m)]
    if not names:
        return None
    fallback = default_methods(names, 1)[0]  # the catalog's default order when the URL names none
    wanted = qp_get("method", fallback)
    method = st.sidebar.selectbox("Method", names, index=names.index(wanted) if wanted in names else
                                  names.index(fallback), key="method")
    qp_set(method=method)
    return method


def behaviour_section(con, run: str, ck: int, method: str, tests: pd.DataFrame) -> None:
    st.subheader("Which training samples make the model show this behaviour?")
    st.caption("Pick the test prompts that show the behaviour (the query group) and, optionally, a control group "
               "of prompts that do not. A training sample's behaviour score is its mean score over the query "
               "group, minus its mean over the control group: a contrast keeps what is specific to the behaviour "
               "and drops what every prompt shares (style, template, length).")
    labels = sorted(tests.label.dropna().unique().tolist())
    left, right = st.columns(2)
    with left:
        query, q_desc = pick_group(con, run, tests, "q", "Query group", default_labels=labels[:1])
        st.caption(f"{len(query)} test prompt(s)")
    with right:
        control, c_desc = pick_group(con, run, tests, "c", "Control group", optional=True,
                                     default_labels=labels[1:2])
        if c_desc != "none":
            st.caption(f"{len(control)} test prompt(s)")
    if not query:
        st.info("The query group is empty: choose its test prompts.")
        return
    overlap = sorted(set(query) & set(control))
    if overlap:
        st.warning(f"{len(overlap)} test prompt(s) are in both groups; they are left out of the control group.")
        control = [j for j in control if j not in set(overlap)]
    ranked = store.behaviour_scores(con, run, method, ck, query, control or None)
    contrast = bool(control)
    st.markdown(f"**{esc(method)}** at checkpoint {ck}: query {md(q_desc)} ({len(query)})"
                + (f" minus control {md(c_desc)} ({len(control)})" if contrast else ""))
    concentration_panel(ranked, "behaviour")
    view = ranked.head(SHOWN)[["rank", "score", "query_mean", "control_mean",
                               *(["label"] if labels else []), "prompt", "response", "train_id"]]
    if not contrast:  # the score is the query mean itself: one column, not two equal ones
        view = view.drop(columns=["query_mean", "control_mean"])
    st.dataframe(view, hide_index=True, width="stretch", key="behaviour_table",
                 column_config={"rank": st.column_config.NumberColumn("#", width=40),
                                "score": st.column_config.NumberColumn(format="%.4g"),
                                "query_mean": st.column_config.NumberColumn("query mean", format="%.4g"),
                                "control_mean": st.column_config.NumberColumn("control mean", format="%.4g"),
                                "train_id": st.column_config.NumberColumn("train id", width="small")})
    st.caption(f"The {min(SHOWN, len(ranked))} highest of {len(ranked)} training samples; the export has all.")
    label_bars(ranked, "behaviour")  # full width: beside the table its label axis squeezed the bars at 1280 px
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{run}_ck{ck}_{method}_behaviour")
    export_buttons(ranked, stem, "behaviour_dl", "Behaviour ranking")


def groups_section(con, run: str, ck: int, method: str) -> None:
    st.subheader("Group-level influence")
    st.caption("Scores of single samples are noisy; summed over groups they show which training groups explain "
               "which test groups. share: of each test group's positive influence, the part held by each training "
               "group (every column adds up to 100 %); a strong diagonal means the method attributes each test "
               "group to its own training group. For a harmful or backdoor task: how much of the harmful "
               "behaviour the harmful training data explains.")
    cols = list(store.GROUP_COLUMNS)
    if not store.run_labelled(con, run):  # the group columns are label columns: nothing to group by
        st.caption(f"By training and test group ({', '.join(cols)}): {NEEDS_LABELS} (this run's data has none).")
        return
    c1, c2, _ = st.columns([1, 2, 2])
    wanted = qp_get("by", cols[0])
    by = c1.selectbox("Group by", cols, index=cols.index(wanted) if wanted in cols else 0, key="by")
    metrics = list(GROUP_METRICS)
    wanted = qp_get("metric", metrics[0])
    metric = c2.radio("Value", metrics, index=metrics.index(wanted) if wanted in metrics else 0, horizontal=True,
                      key="metric", format_func=lambda m: GROUP_METRICS[m][0])
    qp_set(by=by, metric=metric)
    cells = store.group_influence(con, run, method, ck, by=by)
    if cells.empty:
        st.info("No scores to aggregate.")
        return
    group_heatmap(cells, metric, by, "group_heatmap")
    with st.expander("The numbers"):
        st.dataframe(cells, hide_index=True, width="stretch", key="group_table")


def main() -> None:
    st.title("Behaviour")
    st.caption("Attribute a behaviour — a group of test prompts, against a control — instead of one prompt, and "
               "see which groups of training samples carry it.")
    con = cursor()
    run = pick_run(con)
    if run is None:
        return
    if not store.run_info(con, run)["methods"]:
        st.info(f"Run {run} has no scores yet.")
        return
    ck = pick_checkpoint(con, run)
    method = pick_method(con, run, ck)
    if method is None:
        st.info("No method has scores at this checkpoint.")
        return
    tests = store.samples(con, run, split="test")
    if tests.empty:
        st.info("This run has no test samples.")
        return
    behaviour_section(con, run, ck, method, tests)
    groups_section(con, run, ck, method)


try:
    main()
except (store.StoreError, ValueError) as e:
    st.error(f"The store could not be read: {e}")
