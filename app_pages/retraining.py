"""Retraining: parameter change vs output change when training samples are removed, next to the noise floor of
retraining itself, and how well each method predicts what removal does (LDS with its interval, per-kind Spearman,
the counterfactual check), and how good attribution can be on the run: every method's LDS beside exact
metagradients on the prompts that have them (analysis stage ``retrain``).

State in the URL: ``run``, ``output`` (the output-change measure), ``method``. No torch, no SQL.
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

import store
from engine.catalog.analyses import DECOMPOSITION_PARTS, METAGRAD, METAGRAD_DESCRIPTION
from ui.analysis_pages import analysis_page, pick_choice
from ui.auth import require_login
from ui.common import chart_text, export_buttons
from ui.readings import (
    GEN_ACC_RULE,
    KIND_NAMES,
    counterfactual_reading,
    decomposition_sentences,
    fmt,
    identity_reading,
    kind_figure,
    lds_reading,
    noise_reading,
    retrain_reading,
    seed_reading,
    size_correlations,
)

st.set_page_config(page_title="Retraining · Influence Explorer", layout="wide")
require_login()

OUTPUTS = {"mean_abs_dloss": "mean |Δ test loss|", "mean_dloss": "mean Δ test loss",
           "kl_mean": "mean KL(original ‖ retrained)", "behaviour_change": "Δ behaviour rate"}
NOISE_OF = {"mean_abs_dloss": "mean_abs_dloss", "mean_dloss": "mean_abs_dloss", "kl_mean": "kl_mean",
            "behaviour_change": "abs_behaviour_change"}
KIND_COLORS = {"noise": "#7f7f7f", "single": "#1f77b4", "label": "#d62728", "random": "#2ca02c", "topk": "#9467bd",
               "lds": "#ff7f0e"}
OTHER_COLORS = {"identity": "#000000", "repeat": "#bcbd22"}  # the check and the second-seed repeats: no scatter
LAYOUT = dict(margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.2, title_text=""))


def _floor(noise: pd.DataFrame, measure: str) -> float | None:
    r = noise[noise.measure == measure]
    return float(r.floor.iloc[0]) if len(r) else None


def param_vs_output(groups: pd.DataFrame, noise: pd.DataFrame, output: str) -> None:
    y_floor, x_floor = _floor(noise, NOISE_OF[output]), _floor(noise, "param_change")
    pts = groups[groups[output].notna()]
    fig = go.Figure()
    for kind, color in KIND_COLORS.items():  # one trace per kind; hollow markers: inside the noise floor
        d = pts[pts.kind == kind]
        if d.empty:
            continue
        fig.add_trace(go.Scatter(
            x=d.param_change, y=d[output], mode="markers", name=KIND_NAMES[kind],
            marker=dict(size=11, opacity=0.9, line=dict(width=2, color=color),
                        color=["white" if pd.notna(w) and bool(w) else color for w in d.within_noise],
                        symbol="diamond" if kind == "noise" else "circle"),
            customdata=d[["group", "n_removed"]].to_numpy(),
            hovertemplate="%{customdata[0]} (%{customdata[1]} removed)<br>‖ΔW‖ %{x:.3g}, %{y:.3g}<extra></extra>"))
    if y_floor is not None:  # the band a reshuffle of the same data reaches
        lo = -y_floor if output in ("mean_dloss", "behaviour_change") else 0
        fig.add_hrect(y0=lo, y1=y_floor, fillcolor="#7f7f7f", opacity=0.15, line_width=0,
                      annotation_text="noise floor", annotation_position="top right")
    if x_floor is not None:
        fig.add_vline(x=x_floor, line_dash="dot", line_color="#7f7f7f")
    fig.update_layout(**LAYOUT, height=440, title="Weight change vs output change",
                      xaxis_title="‖ΔW‖ of the merged LoRA update, all modules", yaxis_title=OUTPUTS[output])
    st.plotly_chart(fig, width="stretch", key="param_vs_output")
    sizes = "; ".join(f"{k} removed: {fmt(rho)} over {n}" for k, n, rho in size_correlations(groups, output))
    st.caption(f"Spearman within one removal size: {sizes or 'no size with 3 removals'}. Grey band and dotted "
               "line: the noise floor (the largest change among the reshuffles of the full set, diamonds); white "
               "markers: a removal whose mean |Δ test loss| is inside it.")


def ba_norms(groups: pd.DataFrame) -> None:
    g = groups.sort_values(["kind", "group_id"]).assign(removed=lambda d: d.kind.map(KIND_NAMES))
    fig = px.bar(g, y="group", x="ba_norm_mean", error_x="ba_norm_std", color="removed", orientation="h",
                 color_discrete_map={KIND_NAMES[k]: c for k, c in {**KIND_COLORS, **OTHER_COLORS}.items()},
                 hover_data={"description": True, "group": False, "removed": False},
                 title="Per-module ‖BA‖_F of each retrained adapter")
    fig.update_layout(**LAYOUT, height=max(320, 140 + 22 * len(g)), xaxis_title="‖B·A‖_F per module (mean ± std)",
                      yaxis_title="", yaxis=dict(autorange="reversed"))
    st.plotly_chart(fig, width="stretch", key="ba_norms")
    st.caption("‖B·A‖_F without α/r, as the authors' `delta.py` computes it; the merged update (α/r)·B·A is in the "
               "table as merged_norm. Hover a bar for the full description of the retraining.")


def lds_chart(lds: pd.DataFrame) -> None:
    d = lds.sort_values("lds")
    fig = go.Figure(go.Scatter(
        x=d.lds, y=d.method, mode="markers", marker=dict(size=11, color="#1f77b4"),
        error_x=dict(type="data", symmetric=False, array=d.lds_hi - d.lds, arrayminus=d.lds - d.lds_lo),
        hovertemplate="%{y}: LDS %{x:.3f}<extra></extra>"))
    fig.add_vline(x=0, line_color="#7f7f7f")
    M, alpha = int(d.n_subsets.iloc[0]), float(d.alpha.iloc[0])
    fig.update_layout(margin=dict(l=10, r=10, t=40, b=10), height=max(300, 90 + 28 * len(d)),
                      title=f"LDS with 95 % interval ({M} subsets, α = {alpha:g})", xaxis_title="LDS",
                      xaxis_range=[-1.05, 1.05], yaxis_title="")
    st.plotly_chart(fig, width="stretch", key="lds")


SHORT_KINDS = {"single": "single", "label": "label", "random": "random k", "topk": "top k", "lds": "LDS"}


def kind_heatmap(methods: pd.DataFrame) -> None:
    rows = []
    for r in methods.to_dict("records"):
        value, control, what = kind_figure(r)
        rows.append({"method": r["method"], "kind": SHORT_KINDS.get(r["kind"], r["kind"]), "value": value,
                     "text": f"{fmt(value)}<br>ctrl {fmt(control)}", "what": what})
    d = pd.DataFrame(rows)
    kinds = [k for k in SHORT_KINDS.values() if k in set(d.kind)]
    wide = d.pivot(index="method", columns="kind", values="value")[kinds]
    text = d.pivot(index="method", columns="kind", values="text")[kinds].fillna("")
    fig = px.imshow(wide, zmin=-1, zmax=1, color_continuous_scale="RdBu", aspect="auto",
                    title="Spearman per kind of removal, per test prompt (row-mean control below)")
    fig.update_traces(text=text.to_numpy(), texttemplate="%{text}")
    fig.update_layout(margin=dict(l=10, r=10, t=60, b=10), height=max(300, 110 + 34 * len(wide)),
                      xaxis_title="", yaxis_title="", coloraxis_showscale=False)  # values are in the cells
    fig.update_xaxes(side="top", tickangle=0)
    st.plotly_chart(fig, width="stretch", key="kind_spearman")
    used = ", ".join(f"{k}: {w}" for k, w in d.drop_duplicates("kind").set_index("kind").what.items() if w)
    st.caption("Predicted (sum of the removed samples' scores) vs actual Δ test loss: for each test prompt, the "
               "Spearman across the removals of one kind, averaged over prompts (with two removals: centred per "
               f"prompt; with one: pooled over prompts, i.e. which prompts the removal moves) — here {used}. "
               "ctrl: the same figure for the row-mean control, which replaces every score by the method's mean "
               "score for the prompt; a method's figure means something only above it.")


def counterfactual_chart(cf: pd.DataFrame) -> None:
    d = cf.copy()
    d["prompt"] = "test " + d.test_id.astype(str)
    k = int(d.k.iloc[0])
    fig = px.scatter(_long_cf(d), x="prompt", y="Δ loss", color="removed", facet_col="method", facet_col_wrap=4,
                     error_y="err_plus", error_y_minus="err_minus",
                     color_discrete_map={"the method's top k": "#9467bd", "k random (mean, min–max)": "#2ca02c"},
                     title=f"Counterfactual check: Δ loss of each checked prompt, k = {k} removed")
    rows = -(-d.method.nunique() // 4)
    fig.update_traces(marker=dict(size=10))
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))  # facet titles: the method only
    fig.update_layout(**LAYOUT, height=140 + 240 * rows)
    fig.update_xaxes(title_text="")
    fig.update_yaxes(title_text="")
    if d.noise_floor.notna().any():
        fig.add_hrect(y0=-float(d.noise_floor.max()), y1=float(d.noise_floor.max()), fillcolor="#7f7f7f",
                      opacity=0.12, line_width=0)
    st.plotly_chart(fig, width="stretch", key="counterfactual")
    st.caption("Purple: the prompt's loss change after retraining without the method's top k for that prompt; green: "
               "the mean (bar: min to max) over the random k-removals, on the same prompt. Grey band: the largest "
               "per-prompt noise floor. A method that explains the prompt moves its loss more than random.")


def _long_cf(d: pd.DataFrame) -> pd.DataFrame:
    """Two rows per checked prompt: the top-k removal and the random removals' mean with its min-max bar."""
    top = d.assign(removed="the method's top k", **{"Δ loss": d.dloss, "err_plus": 0.0, "err_minus": 0.0})
    rnd = d.assign(removed="k random (mean, min–max)", **{"Δ loss": d.random_mean,
                                                           "err_plus": d.random_max - d.random_mean,
                                                           "err_minus": d.random_mean - d.random_min})
    return pd.concat([top, rnd])[["method", "prompt", "test_id", "removed", "Δ loss", "err_plus", "err_minus"]]


def show_decomposition(con, run: str) -> None:
    """How good attribution can be on this run: every method's LDS beside metagrad's on the prompts that have it,
    with what each score assumes, and the gap split into curvature and convergence (``retrain_decomposition``)."""
    st.subheader("How good can attribution be here?")
    dec = store.analysis_table(con, run, "retrain_decomposition")
    if dec.empty:
        st.info(f"No exact metagradients in this run: set `analysis.metagrad_prompts` (the {METAGRAD} reference "
                "replays the fine-tuning run and differentiates each prompt's loss with respect to every training "
                "sample's weight; runs the engine fine-tuned only).")
        return
    for sentence in decomposition_sentences(dec):
        st.markdown(f"- {sentence}")
    mg = store.analysis_table(con, run, "retrain_metagrad")
    prompts = sorted(int(j) for j in mg.test_id.unique())
    st.caption(f"Prompts with {METAGRAD} (test ids): {', '.join(map(str, prompts))}. Other prompts have no "
               f"{METAGRAD} row in any table. {METAGRAD_DESCRIPTION[:1].upper() + METAGRAD_DESCRIPTION[1:]}.")
    table = dec[["method", "part", "lds", "lds_lo", "lds_hi", "n_test"]].copy()
    order = {m: i for i, m in enumerate(DECOMPOSITION_PARTS)}
    table = table.sort_values("method", key=lambda c: c.map(lambda m: order.get(m, len(order)))).rename(
        columns={"part": "what the score assumes", "lds_lo": "95 % from", "lds_hi": "to",
                 "n_test": "prompts with a defined LDS"})
    st.dataframe(table, hide_index=True, width="stretch", key="decomposition_table",
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("lds", "95 % from", "to")})
    export_buttons(table, f"{run}_decomposition", "download_decomposition", "Decomposition")


def show(con, run: str) -> None:
    groups = store.analysis_table(con, run, "retrain_groups")
    methods = store.analysis_table(con, run, "retrain_methods")
    lds = store.analysis_table(con, run, "retrain_lds")
    cf = store.analysis_table(con, run, "retrain_counterfactual")
    noise = store.retrain_noise(con, run)
    groups["group"] = [chart_text(g, 40) for g in groups.group_id]
    output = pick_choice("Output change", "output", list(OUTPUTS), "mean_abs_dloss", fmt=OUTPUTS.get)
    for sentence in (identity_reading(groups) + noise_reading(noise, groups) + seed_reading(groups, noise)
                     + retrain_reading(groups, methods, output)):
        st.markdown(f"- {sentence}")

    left, right = st.columns(2)
    with left:
        param_vs_output(groups, noise, output)
    with right:
        ba_norms(groups)
    if not noise.empty:
        names = {"mean_abs_dloss": "mean |Δ test loss|", "kl_mean": "mean KL", "abs_behaviour_change":
                 "|Δ behaviour rate|", "param_change": "‖ΔW‖"}
        st.caption("Noise floor per measure (largest, and mean, over the reshuffles of the full set): "
                   + "; ".join(f"{names.get(r.measure, r.measure)} ≤ {fmt(r.floor)} (mean {fmt(r.mean)})"
                               for r in noise.itertuples()))
    if "seed_spread" in groups and groups.seed_spread.notna().any():
        seeds = groups[groups.seed_spread.notna()][["group_id", "n_removed", "mean_abs_dloss", "seed_abs_dloss",
                                                    "seed_spread", "seed_rho"]]
        st.caption("Each removal's effect at the train seed (mean |Δ test loss|) and at a second data-order seed "
                   "(against the full set at that seed), the mean |difference| of the two per prompt (seed spread) "
                   "and their Spearman over the prompts:")
        st.dataframe(seeds, hide_index=True, width="stretch", key="seed_table")

    st.subheader("Which method predicts what retraining does?")
    for sentence in lds_reading(lds) + counterfactual_reading(store.retrain_counterfactual_summary(con, run)):
        st.markdown(f"- {sentence}")
    c1, c2 = st.columns(2)
    with c1:
        if lds.empty:
            st.info("No LDS in this run (`analysis.lds_subsets: 0`).")
        else:
            lds_chart(lds)
    with c2:
        if not methods.empty:
            kind_heatmap(methods)
    if cf.empty:
        st.info("No counterfactual check in this run (`analysis.cf_prompts: 0`, or no random removals to compare "
                "with: `analysis.retrain_seeds: 0`).")
    else:
        counterfactual_chart(cf)

    show_decomposition(con, run)

    names = sorted(methods.method.unique().tolist())
    points = store.retrain_points(con, run)
    if names:
        method = pick_choice("Method", "method", names, names[0])
        pts = points[points.method == method].copy()
        pts["test label"] = [chart_text(v, 40) for v in pts.label]
        pts["removed"] = pts.kind.map(KIND_NAMES)
        fig = px.scatter(pts, x="predicted", y="dloss", color="removed",
                         color_discrete_map={KIND_NAMES[k]: c for k, c in KIND_COLORS.items()},
                         hover_data=["group_id", "test_id", "test label", "noise_floor"],
                         title=f"{method}: predicted vs actual change of each test loss")
        fig.update_traces(marker=dict(size=7, opacity=0.7))
        fig.update_layout(**LAYOUT, height=440, xaxis_title="predicted (sum of the removed samples' scores)",
                          yaxis_title="actual Δ loss")
        st.plotly_chart(fig, width="stretch", key="pred_vs_actual")
        st.caption("Each point is one (retraining, test prompt) pair; no labels involved. Hover shows the prompt's "
                   "noise floor.")

    st.subheader("Retrained models")
    st.caption(f"gen_acc: {GEN_ACC_RULE}. cached: reused from the retrain bank instead of fine-tuned again; time_s "
               "is the fine-tune's own time.")
    table = groups.drop(columns=["group"])
    st.dataframe(table, hide_index=True, width="stretch", key="groups_table")
    export_buttons(table, f"{run}_retrain_groups", "download_groups", "Retrainings")
    export_buttons(points, f"{run}_retrain_points", "download_points", "Predicted vs actual")
    if not cf.empty:
        export_buttons(cf, f"{run}_counterfactual", "download_cf", "Counterfactual")


st.title("Parameter change vs output change")
st.caption("Retrain from the same initial LoRA weights, data order and dropout masks with training samples "
           "removed, next to retrainings of the full set with other data orders (the noise floor). Does a bigger "
           "change of the weights mean a bigger change of what the model says — and which attribution method "
           "predicts the change?")
analysis_page("retrain", show)
