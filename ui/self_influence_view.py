"""The Dataset page's self-influence list: training samples ranked by s(z_i, z_i), the usual way to spot
mislabelled, duplicated or outlying samples (``engine.scoring.self_influence``). No torch, no SQL."""

from __future__ import annotations

import numpy as np
import plotly.express as px
import streamlit as st

import store
from engine.catalog.methods import default_methods
from ui.common import chart_text, export_buttons, qp_get, qp_set

SHOWN = 25


def section(con, run: str) -> None:
    st.subheader("Self-influence: the training samples that support themselves most")
    sets = store.self_influence_sets(con, run)
    if sets.empty:
        st.info("This run has no self-influence scores (it was written before they existed, self-influence was "
                "turned off with scoring.self_influence: false, or it has no gradient method).")
        return
    names = sorted(set(sets.method))
    # the catalog's default order among the methods whose self-influence means something
    fallback = (default_methods(names, 1, where=lambda info: info.has_self_influence) or names)[0]
    wanted = qp_get("si", fallback)
    c1, c2, _ = st.columns([2, 1, 3])
    method = c1.selectbox("Method", names, index=names.index(wanted) if wanted in names else names.index(fallback),
                          key="si_method")
    qp_set(si=method)
    cks = sorted(sets[sets.method == method].checkpoint.astype(int))
    ck = c2.selectbox("Checkpoint", cks, index=len(cks) - 1, key="si_ckpt")
    ranked = store.self_influence(con, run, method, ck)
    st.caption(f"s(z_i, z_i) under {method} at checkpoint {ck}: the training sample's own gradient taken as the "
               "query. A sample far above the rest is one the model fits only by memorising it — often a "
               "mislabelled, duplicated or odd sample; look at those first. (Cosine-type methods, RepSim and the "
               "baselines score every sample 1 or nothing here, so they are left out.)")
    labelled = ranked.label.notna().any()  # without labels: no label column, one box over every training sample
    st.dataframe((ranked if labelled else ranked.drop(columns=["label"])).head(SHOWN), hide_index=True, width="stretch", key="self_influence_table",
                 column_config={"rank": st.column_config.NumberColumn("#", width=40),
                                "train_id": st.column_config.NumberColumn("train id", width="small"),
                                "score": st.column_config.NumberColumn("self-influence", format="%.4g")})
    # the chart full width below the table: beside it, long labels left the plot ~70 px wide at 1280 px
    by_label = ranked.assign(label=ranked.label.map(lambda v: chart_text(v, 40)) if labelled else "all samples")
    fig = px.box(by_label, x="score", y="label", points="all", hover_data=["train_id"],
                 labels={"score": "self-influence", "label": "training label" if labelled else ""},
                 title="Self-influence by training label" if labelled else "Self-influence (no labels)")
    if (ranked.score > 0).all() and ranked.score.max() / max(ranked.score.min(), 1e-300) > 100:
        fig.update_xaxes(type="log")
    fig.update_layout(height=max(280, 24 * by_label.label.nunique() + 120), margin=dict(l=10, r=10, t=40, b=10))
    st.plotly_chart(fig, width="stretch", key="self_influence_chart")
    top = ranked.score.iloc[0] if len(ranked) else np.nan
    median = float(ranked.score.median()) if len(ranked) else np.nan
    if np.isfinite(top) and np.isfinite(median) and median > 0:
        st.caption(f"The top sample's self-influence is {top / median:.1f}× the median.")
    export_buttons(ranked, f"{run}_ckpt{ck}_{method}_self_influence", "si_dl", "Self-influence")
