"""Convergence: losses, generation accuracy, each method's Acc@1 / Coverage@k and the stability of its scores at
every epoch checkpoint (analysis stage ``convergence``).

State in the URL: ``run``. No torch, no SQL: data from ``store``.
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

import store
from ui.analysis_pages import analysis_page
from ui.common import export_buttons
from ui.readings import GEN_ACC_RULE, convergence_reading
from ui.auth import require_login

st.set_page_config(page_title="Convergence · Influence Explorer", layout="wide")
require_login()


def chart(df: pd.DataFrame, y, title: str, key: str, color: str | None = None, y_title: str = "",
          y_range=None) -> None:
    fig = px.line(df, x="checkpoint", y=y, color=color, markers=True, title=title)
    fig.update_layout(margin=dict(l=10, r=10, t=50, b=10), height=360, xaxis_title="epoch checkpoint",
                      yaxis_title=y_title, legend_title_text="")
    fig.update_xaxes(dtick=1)
    if y_range:
        fig.update_yaxes(range=y_range)
    st.plotly_chart(fig, width="stretch", key=key)


def show(con, run: str) -> None:
    ev = store.analysis_table(con, run, "checkpoint_eval")
    drift = store.analysis_table(con, run, "score_drift")
    lb = store.leaderboard(con, run)
    for sentence in convergence_reading(ev, drift, lb):
        st.markdown(f"- {sentence}")

    left, right = st.columns(2)
    with left:
        losses = ev.melt(id_vars="checkpoint", value_vars=["train_loss", "test_loss"], var_name="set",
                         value_name="loss").replace({"train_loss": "training set", "test_loss": "test set"})
        chart(losses, "loss", "Mean loss per sample (teacher-forced)", "loss", color="set", y_title="loss")
    with right:
        gen = ev.melt(id_vars="checkpoint", value_vars=["gen_acc", "behaviour_rate"], var_name="measure",
                      value_name="share").replace({"gen_acc": "contains the reference answer",
                                                   "behaviour_rate": "shows the target behaviour"})
        chart(gen, "share", "Greedy generations on the test prompts", "generation", color="measure",
              y_title="share of test prompts", y_range=[-0.02, 1.02])
    st.caption("Checkpoint 0 is the LoRA initialisation (B = 0: the base model). Generation accuracy: "
               f"{GEN_ACC_RULE}. For tasks without a behaviour marker the behaviour rate is that same share.")

    left, right = st.columns(2)
    with left:
        chart(lb, "acc", "Acc@1 per method", "acc", color="method", y_title="Acc@1", y_range=[-0.02, 1.02])
    with right:
        k = int(lb.k.iloc[0]) if len(lb) else 0
        chart(lb, "coverage", f"Coverage@{k} per method", "coverage", color="method", y_title=f"Coverage@{k}",
              y_range=[-0.02, 1.02])
    if drift.empty:
        st.info("Only one checkpoint was scored: there is no score stability to show.")
    else:
        chart(drift, "spearman_prev", "Rank correlation of each method's scores with the previous checkpoint",
              "drift", color="method", y_title="mean Spearman per test prompt", y_range=[-1.02, 1.02])

    st.subheader("Tables")
    st.dataframe(ev, hide_index=True, width="stretch", key="ev_table")
    export_buttons(ev, f"{run}_checkpoint_eval", "download_ev", "Per checkpoint")
    if not drift.empty:
        st.dataframe(drift, hide_index=True, width="stretch", key="drift_table")
        export_buttons(drift, f"{run}_score_drift", "download_drift", "Score stability")


st.title("Convergence over epochs")
st.caption("Does the model converge, and do the attributions settle down with it? Every epoch checkpoint, "
           "from the LoRA initialisation to the end of fine-tuning.")
analysis_page("convergence", show)
