"""Convergence: losses, generation accuracy, each method's Acc@1 / Coverage@k and the stability of its scores at
every epoch checkpoint (analysis stage ``convergence``), and the fine-tuning loss of every optimizer step.

State in the URL: ``run``. No torch, no SQL: data from ``store``.
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

import store
from ui.analysis_pages import analysis_page
from ui.auth import require_login
from ui.common import export_buttons
from ui.labels import NEEDS_LABELS
from ui.readings import GEN_ACC_RULE, convergence_reading

st.set_page_config(page_title="Convergence · Influence Explorer", layout="wide")
require_login()


def chart(df: pd.DataFrame, y, title: str, key: str, color: str | None = None, y_title: str = "",
          y_range=None) -> None:
    """A line per ``color`` over the checkpoints; the legend sits above the plot, never over the lines."""
    fig = px.line(df, x="checkpoint", y=y, color=color, markers=True, title=title)
    fig.update_layout(margin=dict(l=10, r=10, t=100, b=10), height=400, xaxis_title="epoch checkpoint",
                      yaxis_title=y_title, title=dict(y=0.98, yanchor="top"),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0, title=None))
    fig.update_xaxes(dtick=1)
    if y_range:
        fig.update_yaxes(range=y_range)
    st.plotly_chart(fig, width="stretch", key=key)


def method_lines(df: pd.DataFrame, values: dict[str, str], title: str, key: str, y_range) -> None:
    """One line per method over the checkpoints, one panel per column in ``values`` (column -> panel title),
    full width with a single legend on the right. 24 dark colours (plotly's default 10 repeat, and symbols
    repeat with them: two methods drew alike), and a marker symbol per method as well."""
    long = df.melt(id_vars=["method", "checkpoint"], value_vars=list(values), var_name="measure",
                   value_name="value").replace({"measure": values})
    fig = px.line(long, x="checkpoint", y="value", color="method", symbol="method", facet_col="measure",
                  markers=True, title=title, category_orders={"measure": list(values.values())},
                  color_discrete_sequence=px.colors.qualitative.Dark24)
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1]))
    fig.update_layout(margin=dict(l=10, r=10, t=70, b=10), height=460, legend_title_text="")
    fig.update_xaxes(dtick=1, title="epoch checkpoint")
    fig.update_yaxes(range=y_range, title=None)
    st.plotly_chart(fig, width="stretch", key=key)


def drift_chart(drift: pd.DataFrame) -> None:
    """Each method's rank correlation with the previous checkpoint: bars when there is one pair of checkpoints
    (a line would be a single point), lines over the checkpoints otherwise."""
    if drift.checkpoint.nunique() > 1:
        fig = px.line(drift, x="checkpoint", y="spearman_prev", color="method", symbol="method", markers=True,
                      title="Rank correlation of each method's scores with the previous checkpoint",
                      color_discrete_sequence=px.colors.qualitative.Dark24)
        fig.update_xaxes(dtick=1, title="epoch checkpoint")
        fig.update_yaxes(range=[-1.02, 1.02], title="mean Spearman per test prompt")
        fig.update_layout(height=460, legend_title_text="")
    else:
        ck = int(drift.checkpoint.iloc[0])
        d = drift.sort_values("spearman_prev")
        fig = px.bar(d, y="method", x="spearman_prev", orientation="h", text_auto=".3f",
                     title=f"Rank correlation of each method's scores between checkpoints {ck - 1} and {ck}")
        fig.update_xaxes(range=[min(0.0, float(d.spearman_prev.min())) - 0.02, 1.05],
                         title="mean Spearman per test prompt")
        fig.update_yaxes(title=None)
        fig.update_layout(height=110 + 26 * len(d))
    fig.update_layout(margin=dict(l=10, r=10, t=50, b=10))
    st.plotly_chart(fig, width="stretch", key="drift")


def step_loss_chart(con, run: str) -> None:
    """The fine-tuning loss of each optimizer step (the run's ``train_loss``), a dotted line where each epoch after
    the first starts; nothing for a run without one (imported scores)."""
    loss = store.train_loss(con, run)
    if loss.empty:
        return
    fig = px.line(loss, x="step", y="loss", hover_data=["epoch"], markers=len(loss) <= 60,
                  title="Fine-tuning loss of each optimizer step (mean over its batch)")
    for epoch, first in loss.groupby("epoch").step.min().iloc[1:].items():
        fig.add_vline(x=first - 0.5, line_dash="dot", line_color="gray", annotation_text=f"epoch {epoch}",
                      annotation_position="top right")
    fig.update_layout(margin=dict(l=10, r=10, t=50, b=10), height=300, xaxis_title="optimizer step",
                      yaxis_title="loss")
    st.plotly_chart(fig, width="stretch", key="step_loss")


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
    step_loss_chart(con, run)

    k = int(lb.k.iloc[0]) if len(lb) else 0
    if lb.acc.notna().any():
        method_lines(lb, {"acc": "Acc@1", "coverage": f"Coverage@{k}"}, "Each method's Acc@1 and Coverage per "
                     "checkpoint", "acc", y_range=[-0.02, 1.02])
    else:
        st.caption(f"Each method's Acc@1 and Coverage per checkpoint: {NEEDS_LABELS} (this run's data has none).")
    if drift.empty:
        st.info("Only one checkpoint was scored: there is no score stability to show.")
    else:
        drift_chart(drift)

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
