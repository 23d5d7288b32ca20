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
from ui import demo_job, run_checks
from ui.common import esc, get_store
from ui.auth import read_only, require_login

st.set_page_config(page_title="Influence Explorer", layout="wide")
require_login()


def show_empty() -> None:
    st.info(
        "The store is empty. Influence Explorer fine-tunes a language model with LoRA, scores every training "
        "sample for every test sample with several attribution methods (GradSim, DataInf, LiSSA, exact iHVP, "
        "RepSim), and shows which methods find the training samples that share the test sample's class."
    )
    st.markdown("Fill it with the demo run (SmolLM2-135M on a small grammars task, a few minutes on a CPU), "
                "from here or from a shell:")
    st.code("python -m engine demo --model smollm2-135m", language="bash")
    demo_launcher()


# --analyses value -> label with the SmolLM2 demo's time on 2 CPU cores (README, "Quick start")
DEMO_ANALYSES = {
    "all": "all three (SmolLM2: ~16 min)",
    "ihvp,convergence": "iHVP error + convergence (~5 min)",
    "none": "none (~3 min)",
}


def demo_launcher() -> None:
    if read_only():
        st.caption("This deployment is read-only: ask whoever runs it to add runs.")
        return
    path = store.default_store_path()
    if demo_job.running_pid(path) is None:
        model = st.radio("Demo model", ["smollm2-135m", "tiny"], horizontal=True, key="demo_model",
                         help="tiny: a random 0.1M-parameter Llama, seconds; smollm2-135m: a real model, minutes")
        analyses = st.radio(
            "Analyses", list(DEMO_ANALYSES), horizontal=True, key="demo_analyses", format_func=DEMO_ANALYSES.get,
            help="The retraining analysis re-fine-tunes the model 8 times (once per removed group of training "
                 "samples): on 2 CPU cores that is most of the SmolLM2 demo's time.")
        if st.button("Run the demo", type="primary", key="run_demo"):
            demo_job.launch(path, model, analyses)
            st.rerun()
        return
    demo_progress()


@st.fragment(run_every=2)
def demo_progress() -> None:
    """Polls the demo's log; when the process ends, reruns the page so the new run is ingested."""
    path = store.default_store_path()
    if demo_job.running_pid(path) is None:
        st.rerun()
    st.info(f"Demo running: {esc(demo_job.last_status(path)) or 'starting…'}")


def show_heatmaps(con) -> None:
    """Methods × runs heatmaps of Acc@1 and Coverage@k at each run's last checkpoint, with chance and best."""
    board = store.leaderboard(con)
    if board.empty:
        return
    last = board[board.checkpoint == board.groupby("run_id").checkpoint.transform("max")]
    cols = st.columns(2)
    for col, metric, title in [(cols[0], "acc", "Acc@1"), (cols[1], "coverage", "Coverage@k")]:
        grid = last.pivot_table(index="method", columns="run_id", values=metric)
        ref = last.groupby("run_id")[["chance_acc" if metric == "acc" else "chance_coverage"]].first().T
        ref.index = ["(chance)"]
        extra = [ref]
        if metric == "coverage":
            best = last.groupby("run_id")[["best_coverage"]].first().T
            best.index = ["(best possible)"]
            extra.append(best)
        grid = pd.concat([grid, *extra])
        fig = px.imshow(grid, text_auto=".2f", zmin=0, zmax=1, color_continuous_scale="Blues", aspect="auto",
                        title=f"{title} (last checkpoint of each run)")
        fig.update_layout(margin=dict(l=10, r=10, t=40, b=10), height=80 + 36 * len(grid))
        col.plotly_chart(fig, width="stretch")


def show_runs(s: store.Store) -> None:
    con = s.cursor()
    runs = store.list_runs(con)
    run_checks.flag_failing(con)  # ui.run_checks: runs whose numerical self-checks fail
    show_heatmaps(con)
    st.markdown("Open in the explorer: " + " · ".join(
        f"[{esc(r)}](Explore?run={esc(r)})" for r in runs.run_id))
    st.subheader(f"Runs ({len(runs)})")
    st.dataframe(
        runs[["run_id", "kind", "model", "task", "status", "n_train", "n_test", "k_default", "methods",
              "checkpoints", "created"]],
        hide_index=True, width="stretch",
    )
    run = st.selectbox("Run", runs.run_id.tolist(), key="run")
    info = store.run_info(con, run)
    run_checks.show(con, run)
    with st.expander(f"Spec and versions of {run}"):
        st.caption(f"spec hash {info.get('spec_hash', '')}")
        st.json({"spec": info.get("spec"), "versions": info.get("versions")}, expanded=1)
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
