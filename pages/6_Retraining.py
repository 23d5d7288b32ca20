"""Retraining: parameter change vs output change when groups of training samples are removed, and how well
each method predicts the actual change of every test loss (analysis stage ``retrain``).

State in the URL: ``run``, ``output`` (the output-change measure), ``method``. No torch, no SQL.
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

import store
from ui.analysis_pages import analysis_page, pick_choice
from ui.common import chart_text, export_buttons
from ui.readings import correlation, fmt, retrain_reading
from ui.auth import require_login

st.set_page_config(page_title="Retraining · Influence Explorer", layout="wide")
require_login()

OUTPUTS = {"mean_abs_dloss": "mean |Δ test loss|", "mean_dloss": "mean Δ test loss",
           "kl_mean": "mean KL(original ‖ retrained), response tokens", "behaviour_change": "Δ behaviour rate"}
KIND_COLORS = {"none": "#7f7f7f", "single": "#1f77b4", "label": "#d62728", "random": "#2ca02c"}


def show(con, run: str) -> None:
    groups = store.analysis_table(con, run, "retrain_groups")
    methods = store.analysis_table(con, run, "retrain_methods")
    groups["group"] = [chart_text(d, 60) for d in groups.description]
    output = pick_choice("Output change", "output", list(OUTPUTS), "mean_abs_dloss", fmt=OUTPUTS.get)
    for sentence in retrain_reading(groups, methods, output):
        st.markdown(f"- {sentence}")

    left, right = st.columns(2)
    with left:
        rest = groups[groups.kind != "none"]
        rho, r = correlation(rest.param_change, rest[output])
        fig = px.scatter(groups, x="param_change", y=output, color="kind", hover_data=["group", "n_removed"],
                         color_discrete_map=KIND_COLORS,
                         title=f"Parameter change vs output change (Spearman {fmt(rho)}, Pearson {fmt(r)})")
        fig.update_traces(marker=dict(size=11, opacity=0.85))
        fig.update_layout(margin=dict(l=10, r=10, t=50, b=10), height=420, legend_title_text="removed",
                          xaxis_title="‖ΔW‖ of the merged LoRA update, all modules", yaxis_title=OUTPUTS[output])
        st.plotly_chart(fig, width="stretch", key="param_vs_output")
    with right:
        fig = px.bar(groups, x="group", y="ba_norm_mean", error_y="ba_norm_std", color="kind",
                     color_discrete_map=KIND_COLORS, title="Per-module ‖(α/r)·BA‖_F of each retrained model "
                                                           "(mean ± std over modules, as in the paper)")
        fig.update_layout(margin=dict(l=10, r=10, t=50, b=10), height=420, legend_title_text="removed",
                          xaxis_title="", yaxis_title="‖BA‖_F per module")
        st.plotly_chart(fig, width="stretch", key="ba_norms")

    st.subheader("Which method predicts what retraining does?")
    st.caption("Each point is one (removed group, test prompt) pair: x = the method's prediction (sum of the "
               "removed samples' scores for that prompt), y = the actual change of the prompt's loss after "
               "retraining without them. A method that ranks these well gets a high Spearman; no labels involved.")
    names = methods.method.tolist()
    points = store.retrain_points(con, run)
    points = points[points.kind != "none"]
    c1, c2 = st.columns([2, 3])
    with c1:
        bars = methods.melt(id_vars="method", value_vars=["spearman_pooled", "lds"], var_name="measure",
                            value_name="spearman").replace({"spearman_pooled": "all groups × test prompts",
                                                            "lds": "LDS (random subsets, per prompt)"})
        fig = px.bar(bars, x="method", y="spearman", color="measure", barmode="group",
                     title="Spearman of predicted vs actual Δ loss")
        fig.update_layout(margin=dict(l=10, r=10, t=50, b=10), height=420, legend_title_text="",
                          yaxis_range=[-1, 1], legend=dict(orientation="h", y=-0.25))
        st.plotly_chart(fig, width="stretch", key="method_spearman")
    with c2:
        if names:
            method = pick_choice("Method", "method", names, names[0])
            pts = points[points.method == method].copy()
            pts["test label"] = [chart_text(v, 40) for v in pts.label]
            fig = px.scatter(pts, x="predicted", y="dloss", color="kind", color_discrete_map=KIND_COLORS,
                             hover_data=["group_id", "test_id", "test label"],
                             title=f"{method}: predicted vs actual change of each test loss")
            fig.update_traces(marker=dict(size=7, opacity=0.7))
            fig.update_layout(margin=dict(l=10, r=10, t=50, b=10), height=420, legend_title_text="removed",
                              xaxis_title="predicted (sum of removed samples' scores)", yaxis_title="actual Δ loss")
            st.plotly_chart(fig, width="stretch", key="pred_vs_actual")

    st.subheader("Retrained models")
    table = groups.drop(columns=["group"])
    st.dataframe(table, hide_index=True, width="stretch", key="groups_table")
    export_buttons(table, f"{run}_retrain_groups", "download_groups", "Groups")
    export_buttons(points, f"{run}_retrain_points", "download_points", "Predicted vs actual")


st.title("Parameter change vs output change")
st.caption("Retrain from the same initial LoRA weights and seed with a group of training samples removed. "
           "Does a bigger change of the weights mean a bigger change of what the model says — and which "
           "attribution method predicts the change?")
analysis_page("retrain", show)
