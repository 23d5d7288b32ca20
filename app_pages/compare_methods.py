"""Compare methods: how far the attribution methods of one run agree, and where two of them disagree most.

No torch and no SQL here: everything comes from ``store`` through ``ui.common.cursor()``. State lives in the
URL: ``run``, ``ckpt`` (shared with the other pages), ``a`` / ``b`` (the two methods compared) and ``test`` (the
test prompt of the scatter plot). Heavy modules are imported before any ``st.*`` call.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

import store
from engine.catalog.analyses import ANALYSIS_CATALOG, STABILITY_PERTURBATIONS
from engine.evaluation import metrics
from ui.auth import require_login
from ui.common import chart_text, cursor, export_buttons, folded, pick_checkpoint, pick_run, qp_get, qp_set
from ui.labels import NEEDS_LABELS, has_label
from ui.stability import perturbation_chart, perturbation_table, stability_warnings

st.set_page_config(page_title="Compare methods · Influence Explorer", layout="wide")
require_login()

MD_SPECIAL = set("\\`*_{}[]()#+-.!|~$:")


# ---------------------------------------------------------------------------------------------- helpers


def agreement_matrices(rows: pd.DataFrame, names: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, int | None]:
    """Symmetric method x method matrices of mean Spearman and overlap@k (1 on the diagonal, NaN where no pair
    row exists). When the rows hold several k, the smallest is used; returns (spearman, overlap, k)."""
    sp = pd.DataFrame(np.nan, index=names, columns=names)
    ov = pd.DataFrame(np.nan, index=names, columns=names)
    k = None
    if not rows.empty:
        k = int(rows.k.min())
        for r in rows[rows.k == k].itertuples(index=False):
            if r.method_a in names and r.method_b in names:
                sp.loc[r.method_a, r.method_b] = sp.loc[r.method_b, r.method_a] = r.spearman
                ov.loc[r.method_a, r.method_b] = ov.loc[r.method_b, r.method_a] = r.overlap
    for m in names:
        sp.loc[m, m] = ov.loc[m, m] = 1.0
    return sp, ov, k


def tick_name(method: str) -> str:
    """A method name for a column label: broken after ``_`` so that it reads horizontally in a narrow column."""
    return str(method).replace("_", "_<br>")


def heatmap(matrix: pd.DataFrame, title: str, zmin: float):
    """Method × method heatmap, full width, every label horizontal (column names wrapped, full names on hover)."""
    fig = px.imshow(matrix, text_auto=".2f", zmin=zmin, zmax=1, color_continuous_scale="RdBu" if zmin < 0 else "Blues",
                    aspect="auto", title=title)
    fig.update_traces(hovertemplate="%{y} vs %{x}: %{z:.3f}<extra></extra>")
    fig.update_xaxes(tickmode="array", tickvals=list(matrix.columns), ticktext=[tick_name(m) for m in matrix.columns],
                     tickangle=0, side="top")
    fig.update_layout(margin=dict(l=10, r=10, t=90, b=10), height=120 + 30 * len(matrix),
                      title=dict(y=0.99, yanchor="top"), coloraxis_colorbar=dict(thickness=12))
    return fig


def top_set(row: np.ndarray, k: int) -> set[int]:
    """Column positions of the ``k`` best scores of one row (the ranking rule of ``engine.evaluation.metrics``)."""
    return set(metrics.top_k_rows(row[None, :], k)[0].tolist())


def md_literal(text, limit: int) -> str:
    """Dataset text for ``st.markdown``: HTML-escaped and cut (``folded``), then markdown punctuation
    backslash-escaped so that e.g. ``th* c*lm`` is not turned into italics."""
    return "".join("\\" + c if c in MD_SPECIAL else c for c in folded(text, limit))


def pick_method(label: str, key: str, names: list[str], default: str) -> str:
    wanted = qp_get(key, default)
    value = st.selectbox(label, names, index=names.index(wanted) if wanted in names else names.index(default),
                         key=f"method_{key}")
    qp_set(**{key: value})
    return value


# ---------------------------------------------------------------------------------------------- sections


def show_agreement(con, run: str, ck: int, names: list[str]) -> None:
    st.subheader("Agreement between methods")
    rows = store.agreement(con, run, ck)
    if rows.empty:
        st.info("This run stores no agreement rows for this checkpoint.")
        return
    sp, ov, k = agreement_matrices(rows, names)
    st.caption("Mean per-test-prompt Spearman correlation of the two methods' scores over all training samples, "
               f"and mean overlap of their top-{k} training samples (1 = identical).")
    # one at a time at full width: side by side, 14+ method columns cannot carry horizontal labels
    left, right = st.tabs(["Mean Spearman", f"Overlap@{k}"])
    left.plotly_chart(heatmap(sp, "Mean Spearman per test prompt", -1.0), width="stretch", key="heat_spearman")
    right.plotly_chart(heatmap(ov, f"Mean overlap of the top {k}", 0.0), width="stretch", key="heat_overlap")


def show_pair(con, run: str, ck: int, names: list[str], k: int) -> None:
    st.subheader("Two methods, one test prompt")
    if len(names) < 2:
        st.info("This checkpoint has scores of only one method; there is nothing to compare.")
        return
    c1, c2, c3 = st.columns([1, 1, 2])
    with c1:
        a = pick_method("Method A", "a", names, names[0])
    with c2:
        b = pick_method("Method B", "b", names, names[1])
    test = store.samples(con, run, split="test")
    train = store.samples(con, run, split="train")
    if test.empty or train.empty:
        st.info("This run has no test or no training samples.")
        return
    test_ids = test.sample_id.astype(int).tolist()
    prompts = dict(zip(test_ids, test.prompt))
    wanted = qp_get("test", test_ids[0], int)
    with c3:
        tid = st.selectbox("Test prompt", test_ids, index=test_ids.index(wanted) if wanted in test_ids else 0,
                           format_func=lambda i: f"#{i}: {str(prompts[i])[:80]}", key="test")
    qp_set(test=tid)
    if a == b:
        st.warning("Method A and method B are the same; pick two different methods.")

    row_a = store.score_row(con, run, a, ck, tid)  # this prompt's scores, in train sample-id order like samples()
    row_b = store.score_row(con, run, b, ck, tid)
    row = test_ids.index(tid)
    test_label = test.label.iloc[row]
    labelled = has_label(test_label)
    shown_label = f" (label *{md_literal(test_label, 80)}*)" if labelled else ""
    st.markdown(f"**Test prompt #{tid}**{shown_label}: {md_literal(test.prompt.iloc[row], 300)}")

    same = (train.label == test_label).to_numpy()
    marks = np.where(same, "same label as test", "other label") if labelled else NEEDS_LABELS
    pts = pd.DataFrame({
        "train_id": train.sample_id.astype(int).to_numpy(),
        a if a != b else f"{a} (A)": row_a,
        b if a != b else f"{b} (B)": row_b,
        "label": [chart_text(v, 60) if has_label(v) else NEEDS_LABELS for v in train.label],
        "prompt": [chart_text(v, 100) for v in train.prompt],
        "same label": marks,
    })
    xa, yb = pts.columns[1], pts.columns[2]
    fig = px.scatter(pts, x=xa, y=yb, color="same label", hover_data=["train_id", "label", "prompt"],
                     color_discrete_map={"same label as test": "#d62728", "other label": "#9aa5b1",
                                         NEEDS_LABELS: "#4a6fa5"},
                     category_orders={"same label": ["same label as test", "other label"]})
    fig.update_traces(marker=dict(size=9, opacity=0.8))
    fig.update_layout(margin=dict(l=10, r=10, t=40, b=10), height=420, legend_title_text="",
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0))
    left, right = st.columns([3, 2])
    left.plotly_chart(fig, width="stretch", key="scatter")
    rho = metrics.spearman(row_a, row_b)
    right.metric(f"Spearman ({a} vs {b}) for this prompt", "n/a" if np.isnan(rho) else f"{rho:.3f}")
    right.metric(f"Top-{k} overlap for this prompt", f"{len(top_set(row_a, k) & top_set(row_b, k)) / k:.2f}")
    right.caption("Each point is a training sample. Red points share the test prompt's label: a good method "
                  "scores them highest." if labelled else "Each point is a training sample (same-label marks "
                  f"{NEEDS_LABELS}: this run's data has none).")

    show_disagreement(con, run, ck, a, b, k, test)


FALLBACK_SCORES = 2_000_000  # runs without stored per-prompt agreement: recompute it up to this many scores per method


def show_stability(con, run: str) -> None:
    """The stability panel: per method and perturbation, how far its ranking moves when one setting changes
    (the stability check's table and chart), with a warning per unstable method."""
    st.subheader("Stability: does a method's ranking survive settings that should not matter?")
    if "stability" not in store.analyses(con, run):
        st.info(f"This run lacks {ANALYSIS_CATALOG['stability'].how_to}.")
        return
    rows = store.analysis_table(con, run, "stability")
    order = {p: i for i, p in enumerate(STABILITY_PERTURBATIONS)}  # the catalog's order, as the check writes them
    rows = rows.sort_values(["method", "perturbation"], key=lambda c: c.map(order) if c.name == "perturbation" else c,
                            kind="stable").reset_index(drop=True)
    summary = store.analysis_table(con, run, "stability_methods")
    st.caption("Each method re-scored with one setting changed, against its own ranking with the run's setting: "
               "mean top-k overlap (and Spearman) over the test prompts. A method's stability is its mean overlap "
               "over the settings that should not matter; the loss positions are the reference, a change that "
               "should matter. At the run's last checkpoint; the source column says where each pair of score "
               "matrices came from (stored scores, cached features, or a new gradient pass over a subset).")
    for sentence in stability_warnings(rows):
        st.warning(sentence)
    st.plotly_chart(perturbation_chart(rows), width="stretch", key="stability_chart")
    grid = perturbation_table(rows).reset_index().merge(summary[["method", "stability"]], on="method", how="outer")
    st.dataframe(grid, hide_index=True, width="stretch", key="stability_table",
                 column_config={c: st.column_config.NumberColumn(c, format="%.2f") for c in grid.columns
                                if c != "method"})
    with st.expander("Every row (Spearman, samples compared, settings)"):
        st.dataframe(rows, hide_index=True, width="stretch", key="stability_rows")


def per_prompt_agreement(con, run: str, ck: int, a: str, b: str, k: int, test: pd.DataFrame) -> pd.DataFrame | None:
    """Per test prompt: test_id, spearman and overlap of the two methods' rows, and the k of the overlap. As the
    run stored it; for a run written before that, recomputed from two prompts' rows at a time when the run is
    small enough; None otherwise."""
    rows = store.test_agreement(con, run, ck, a, b)
    if not rows.empty:
        return rows
    info = store.run_info(con, run)
    if int(info.get("n_test") or 0) * int(info.get("n_train") or 0) > FALLBACK_SCORES:
        return None
    out = []
    for tid in test.sample_id.astype(int):
        x, y = store.score_row(con, run, a, ck, tid), store.score_row(con, run, b, ck, tid)
        out.append({"test_id": tid, "spearman": metrics.spearman(x, y),
                    "overlap": len(top_set(x, k) & top_set(y, k)) / k, "k": k})
    return pd.DataFrame(out)


def show_disagreement(con, run: str, ck: int, a: str, b: str, k: int, test: pd.DataFrame) -> None:
    st.subheader(f"Where {a} and {b} disagree most")
    if a == b:
        return
    rows = per_prompt_agreement(con, run, ck, a, b, k, test)
    if rows is None:
        st.info("This run was written before per-prompt agreement was stored with it, and is too large to "
                "recompute it here; run it again to list the prompts where the methods disagree.")
        return
    k = int(rows.k.iloc[0]) if len(rows) else k
    table = pd.DataFrame({
        "test_id": test.sample_id.astype(int).to_numpy(),
        "label": test.label.to_numpy(),
        "prompt": test.prompt.to_numpy(),
        "response": test.response.to_numpy(),
    }).merge(rows.rename(columns={"overlap": f"overlap@{k}"}).drop(columns="k"), on="test_id", how="left")
    table = table[["test_id", "spearman", f"overlap@{k}", *(["label"] if test.label.notna().any() else []), "prompt",
                   "response"]]
    table = table.sort_values(["spearman", "test_id"], na_position="last", kind="stable").reset_index(drop=True)
    st.caption("Test prompts ordered by the Spearman correlation of the two methods' score rows, lowest first "
               "(NaN: a row is constant or missing).")
    st.dataframe(table, hide_index=True, width="stretch", key="disagreement",
                 column_config={"spearman": st.column_config.NumberColumn(format="%.3f"),
                                f"overlap@{k}": st.column_config.NumberColumn(format="%.2f")})
    export_buttons(table, f"{run}_ckpt{ck}_{a}_vs_{b}_disagreement", "download_disagreement")


# ---------------------------------------------------------------------------------------------- page


st.title("Compare methods")
st.caption("Do the attribution methods point at the same training samples? Agreement over all test prompts, "
           "and the prompts where two methods disagree most.")
try:
    con = cursor()
    run = pick_run(con)
    if run is not None:
        ck = pick_checkpoint(con, run)
        info = store.run_info(con, run)
        names = [m for m in store.methods(con, run) if ck in store.checkpoints(con, run, m)]
        k = max(1, min(int(info.get("k_default") or 1), max(int(info.get("n_train") or 1), 1)))
        if not names:
            st.info("No method has scores at this checkpoint.")
        else:
            show_agreement(con, run, ck, names)
            show_stability(con, run)
            show_pair(con, run, ck, names, k)
except store.StoreError as e:
    st.error(f"The store could not be read: {e}")
