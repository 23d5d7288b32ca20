"""iHVP error: how far DataInf and LiSSA are from the exact inverse-Hessian-vector product, as the parameter
subset grows, as the damping changes and as LiSSA takes more steps (analysis stage ``ihvp``).

State in the URL: ``run``, ``lc`` (damping λ_c), ``metric``, ``level``. No torch, no SQL: data from ``store``.
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

import store
from ui.analysis_pages import analysis_page, pick_choice
from ui.auth import require_login
from ui.common import export_buttons
from ui.labels import without_label_metrics
from ui.log_axis import log_ticks, worth_log
from ui.readings import METHOD_NAMES, ihvp_reading

st.set_page_config(page_title="iHVP error · Influence Explorer", layout="wide")
require_login()

METRICS = {"rel_error": "relative error ‖q − q*‖ / ‖q*‖", "cosine": "cosine(q, q*)",
           "spearman": "Spearman of the scores vs exact", "acc": "Acc@1 of the scores", "time_s": "time (s)"}
SHORT = {"rel_error": "relative error", "cosine": "cosine", "spearman": "Spearman vs exact", "acc": "Acc@1",
         "time_s": "time (s)"}  # axis titles and half-width chart titles: the long names do not fit at 1280 px
LOG_METRICS = {"rel_error", "time_s"}
LOG_AXIS = dict(exponentformat="power", dtick=1)  # one labelled tick per power of ten, never crowded



# one colour per method on every chart, so that the half-width damping chart can do without its own legend
COLORS = dict(zip(METHOD_NAMES.values(), px.colors.qualitative.Dark24))


def line(df: pd.DataFrame, x: str, y: str, color: str, title: str, log_x: bool, log_y: bool, key: str,
         x_title: str, height: int = 400, legend: bool = True) -> None:
    fig = px.line(df.sort_values(x), x=x, y=y, color=color, markers=True, log_x=log_x, log_y=log_y, title=title,
                  color_discrete_map=COLORS,
                  hover_data=[c for c in ("level", "dim", "lambda_c", "iterations", "reference", "note") if c in df])
    fig.update_layout(margin=dict(l=10, r=10, t=40, b=10), height=height, xaxis_title=x_title,
                      yaxis_title=SHORT.get(y, y), showlegend=legend,
                      legend=dict(orientation="h", y=-0.25, title_text=""))
    if log_y:
        fig.update_yaxes(**log_ticks(df[y]))
    if log_x:
        fig.update_xaxes(**LOG_AXIS)
    st.plotly_chart(fig, width="stretch", key=key)


def show(con, run: str) -> None:
    rows = store.analysis_table(con, run, "ihvp_error")
    rows["method name"] = rows.method.map(lambda m: METHOD_NAMES.get(m, m))
    lcs = sorted(rows.lambda_c.unique().tolist())
    sweep_lc = float(rows[rows.method == "lissa_steps"].lambda_c.iloc[0]) if (rows.method == "lissa_steps").any() \
        else lcs[0]
    c1, c2, c3 = st.columns(3)
    with c1:
        lc = pick_choice("Damping λ_c (λ = mean(g²) / λ_c)", "lc", lcs, sweep_lc, cast=float)
    with c2:
        labelled = rows.acc.notna().any()  # Acc@1 needs labels: not offered for a run without them
        metric = pick_choice("Measure", "metric", [m for m in METRICS if labelled or m != "acc"], "rel_error",
                             fmt=METRICS.get)
    levels = rows.sort_values("dim").level.unique().tolist()
    with c3:
        level = pick_choice("Parameter subset (for the damping and steps charts)", "level", levels, levels[-1],
                            fmt=lambda lv: f"{lv} (d = {int(rows[rows.level == lv].dim.iloc[0])})")

    for sentence in ihvp_reading(rows, lc):
        st.markdown(f"- {sentence}")
    desc = rows.groupby("level").first().sort_values("dim")
    st.caption("Subsets: " + "; ".join(f"**{lv}** = {r.description} (d = {int(r.dim)})" for lv, r in desc.iterrows())
               + f". Measured at checkpoint {int(rows.checkpoint.iloc[0])} on every test sample. Each row names its "
                 "reference q* = H⁻¹v, computed exactly: DataInf and LiSSA against the subset as ONE block, "
                 "H = GᵀG/n + λI (shared λ); the per-matrix forms (exact and DataInf per LoRA matrix, EK-FAC, K-FAC) "
                 "against H = GᵀG/n + diag(λ_l), every matrix damped with its own λ_l as the methods damp (per-matrix "
                 "λ), so their error is the empirical Fisher's cross-blocks between matrices (with fewer samples "
                 "than parameters, sampling noise included), not a damping mismatch. Two control rows "
                 "separate the two: per-matrix blocks with one shared λ, and the damping choice alone.")

    at = rows[(rows.lambda_c == lc) & (rows.method != "lissa_steps")]
    line(at, "dim", metric, "method name", f"{SHORT[metric]} vs number of parameters (λ_c = {lc:g})",
         True, metric in LOG_METRICS, "by_dim", "parameters in the subset (log)", height=460)

    left, right = st.columns(2)
    with left:
        steps = rows[(rows.method == "lissa_steps") & (rows.level == level)].copy()
        if steps.empty:
            st.info("This run has no LiSSA step sweep.")
        else:
            steps = steps[steps.iterations > 0] if metric in LOG_METRICS else steps
            base = rows[(rows.lambda_c == sweep_lc) & (rows.level == level) & rows.method.isin(["datainf"])]
            steps = steps.sort_values("iterations")
            fig = go.Figure(go.Scatter(x=steps.iterations, y=steps[metric], mode="lines+markers",
                                       name="LiSSA after T steps", line=dict(color=COLORS[METHOD_NAMES["lissa"]])))
            for r in base.itertuples():  # a trace, not an hline: hline annotations land off the line on log axes
                fig.add_trace(go.Scatter(x=[steps.iterations.min(), steps.iterations.max()],
                                         y=[getattr(r, metric)] * 2, mode="lines", name="DataInf",
                                         line=dict(dash="dash", color=COLORS[METHOD_NAMES["datainf"]])))
            shown = list(steps[metric]) + [getattr(r, metric) for r in base.itertuples()]
            log_y = metric in LOG_METRICS and worth_log(shown)  # errors all near 1: linear, or one tick shows
            fig.update_layout(margin=dict(l=10, r=10, t=40, b=10), height=380, xaxis_title="LiSSA steps T (log)",
                              yaxis_title=SHORT[metric], title=f"LiSSA after T steps ({level}, λ_c = {sweep_lc:g})",
                              xaxis_type="log", yaxis_type="log" if log_y else "linear",
                              legend=dict(orientation="h", y=-0.3))
            fig.update_xaxes(**LOG_AXIS)
            if log_y:
                fig.update_yaxes(**log_ticks(shown))
            st.plotly_chart(fig, width="stretch", key="by_steps")
    with right:
        damp = rows[(rows.level == level) & (rows.method != "lissa_steps")]
        line(damp, "lambda_c", metric, "method name", f"{SHORT[metric]} vs damping ({level})", True,
             metric in LOG_METRICS, "by_damping", "λ_c (log; larger = weaker damping)", height=380, legend=False)
        st.caption("Colours as in the chart above.")

    st.subheader("All measurements")
    table = rows.drop(columns=["method name"])
    if not labelled:
        table = without_label_metrics(table, extra=("acc_reference", "acc_exact"))
    st.dataframe(table, hide_index=True, width="stretch", key="ihvp_table")
    export_buttons(table, f"{run}_ihvp_error", "download_ihvp")


st.title("iHVP approximation error")
st.caption("Influence functions need H⁻¹v, the inverse Hessian times a test gradient. How close do DataInf and "
           "LiSSA get to the exact value, and does the ranking of training samples survive their error?")
analysis_page("ihvp", show)
