"""Influence Explorer — Streamlit entry point: what the store holds, every run and its leaderboard.

Run with ``streamlit run app.py``. No torch and no SQL here: the page talks to ``store`` only. Heavy modules
are imported at the top, before any ``st.*`` call, so an early click cannot interrupt a lazy import.
"""

from __future__ import annotations

import html

import pandas as pd  # noqa: F401  (imported first on purpose: see module docstring)
import plotly.express as px
import streamlit as st

import store
from ui.common import get_store

st.set_page_config(page_title="Influence Explorer", layout="wide")


def show_empty() -> None:
    st.info(
        "The store is empty. Influence Explorer fine-tunes a language model with LoRA, scores every training "
        "sample for every test sample with several attribution methods (GradSim, DataInf, LiSSA, exact iHVP, "
        "RepSim), and shows which methods find the training samples that share the test sample's class."
    )
    st.markdown("Fill it with the demo run (SmolLM2-135M on a small grammars task, a few minutes on a CPU):")
    st.code("python -m engine demo --model smollm2-135m", language="bash")
    st.caption("Then reload this page: finished runs are picked up automatically.")


def show_runs(s: store.Store) -> None:
    con = s.cursor()
    runs = store.list_runs(con)
    st.subheader(f"Runs ({len(runs)})")
    st.dataframe(
        runs[["run_id", "kind", "model", "task", "n_train", "n_test", "k_default", "methods", "checkpoints",
              "created"]],
        hide_index=True, width="stretch",
    )
    run = st.selectbox("Run", runs.run_id.tolist(), key="run")
    board = store.leaderboard(con, run=run)
    last = board[board.checkpoint == board.checkpoint.max()]
    chance = float(last.chance_acc.iloc[0])
    best = float(last.best_coverage.iloc[0])
    k = int(last.k.iloc[0])
    st.markdown(f"**Leaderboard** for `{html.escape(run)}` at checkpoint {int(last.checkpoint.iloc[0])}, "
                f"k = {k}: chance level {chance:.2f}, best possible coverage {best:.2f}")
    long = last.melt(id_vars=["method"], value_vars=["acc", "coverage"], var_name="metric", value_name="value")
    fig = px.bar(long, x="method", y="value", color="metric", barmode="group", range_y=[0, 1])
    fig.add_hline(y=chance, line_dash="dot", annotation_text="chance")
    st.plotly_chart(fig, width="stretch")
    st.dataframe(board, hide_index=True, width="stretch")


st.title("Influence Explorer")
st.caption("Which training samples are behind a fine-tuned LLM's behaviour — and can the attribution method "
           "be trusted?")
try:
    s = get_store()
    new = s.ingest_all(strict=False)  # runs that finished since the last look
    if new:
        st.toast(f"Ingested {len(new)} new run(s)")
    summ = store.summary(s.cursor())
    cols = st.columns(4)
    for col, (label, key) in zip(cols, [("Runs", "runs"), ("Samples", "samples"), ("Scores", "scores"),
                                          ("Methods", "methods")]):
        col.metric(label, f"{summ[key]:,}")
    if summ["runs"] == 0:
        show_empty()
    else:
        show_runs(s)
except store.StoreError as e:
    st.error(f"The store could not be read: {e}")
