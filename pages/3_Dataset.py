"""Dataset: browse a run's training and test samples, its class composition, and which training samples the
attribution methods rank in the top k again and again.

No torch and no SQL here: everything comes from ``store`` through ``ui.common.cursor()``. State lives in the
URL: ``run``, ``ckpt`` (shared with the other pages), ``split``, ``label``, ``q`` (sample browser) and
``method``, ``k`` (top-k counts). Heavy modules are imported before any ``st.*`` call.
"""

from __future__ import annotations


import pandas as pd
import plotly.express as px
import streamlit as st

import store
from ui.common import cursor, export_buttons, pick_checkpoint, pick_run, qp_get, qp_set
from ui.auth import require_login

st.set_page_config(page_title="Dataset · Influence Explorer", layout="wide")
require_login()

SPLITS = ["all", "train", "test"]
ALL_LABELS = "(all labels)"


# ---------------------------------------------------------------------------------------------- helpers


def downloads(df: pd.DataFrame, stem: str, key: str) -> None:
    export_buttons(df, stem, key)


# ---------------------------------------------------------------------------------------------- sections


def show_browser(con, run: str, labels: list[str]) -> None:
    st.subheader("Samples")
    c1, c2, c3 = st.columns([1, 2, 3])
    wanted_split = qp_get("split", "all")
    split = c1.selectbox("Split", SPLITS, index=SPLITS.index(wanted_split) if wanted_split in SPLITS else 0,
                         key="split")
    options = [ALL_LABELS, *labels]
    wanted_label = qp_get("label", ALL_LABELS)
    label = c2.selectbox("Label", options, index=options.index(wanted_label) if wanted_label in options else 0,
                         key="label")
    q = c3.text_input("Search prompt and response (plain text, case-insensitive)", value=qp_get("q", ""), key="q")
    qp_set(split=None if split == "all" else split, label=None if label == ALL_LABELS else label, q=q or None)

    df = store.samples(con, run, split=None if split == "all" else split,
                       label=None if label == ALL_LABELS else label, search=q or None)
    st.caption(f"{len(df)} sample(s)")
    st.dataframe(df, hide_index=True, width="stretch", key="samples_table")
    downloads(df, f"{run}_samples", "samples")


def show_composition(all_samples: pd.DataFrame) -> None:
    st.subheader("Class composition")
    if all_samples.empty:
        st.info("This run has no samples.")
        return
    comp = all_samples.groupby(["split", "label"]).size().rename("n").reset_index()
    fig = px.bar(comp, x="label", y="n", color="split", barmode="group",
                 category_orders={"split": ["train", "test"]}, labels={"n": "samples"})
    fig.update_layout(margin=dict(l=10, r=10, t=30, b=10), height=380, xaxis_title="", legend_title_text="split")
    st.plotly_chart(fig, width="stretch", key="composition")


def show_topk(con, run: str, ck: int, info: dict, train: pd.DataFrame) -> None:
    st.subheader("Training samples most often in someone's top k")
    names = [m for m in store.methods(con, run) if ck in store.checkpoints(con, run, m)]
    if not names or train.empty:
        st.info("No method has scores at this checkpoint.")
        return
    n_train = len(train)
    k_max = max(1, min(n_train, int(info.get("stored_k") or n_train)))  # the ranks the store keeps per prompt
    c1, c2, _ = st.columns([2, 1, 3])
    wanted = qp_get("method", names[0])
    method = c1.selectbox("Method", names, index=names.index(wanted) if wanted in names else 0, key="method")
    k_default = max(1, min(int(info.get("k_default") or 1), k_max))
    k_wanted = qp_get("k", k_default, int)
    k_wanted = k_wanted if 1 <= k_wanted <= k_max else k_default
    k = int(c2.number_input("k", min_value=1, max_value=k_max, value=k_wanted, step=1, key="k"))
    qp_set(method=method, k=k)

    # per training sample: in how many test prompts' top k it is, and how many rank it first (from the store's
    # top-k table, never the score matrix)
    counts = store.topk_counts(con, run, method, ck, k).set_index("train_id")
    n_test = int(info.get("n_test") or 0)
    ids = train.sample_id.astype(int).to_numpy()
    n_topk = counts.n.reindex(ids, fill_value=0).to_numpy()
    table = pd.DataFrame({
        "train_id": ids,
        f"n_top{k}": n_topk,
        "share": n_topk / max(n_test, 1),
        "n_top1": counts.n_top1.reindex(ids, fill_value=0).to_numpy(),
        "label": train.label.to_numpy(),
        "prompt": train.prompt.to_numpy(),
        "response": train.response.to_numpy(),
    })
    table = table.sort_values([f"n_top{k}", "n_top1", "train_id"], ascending=[False, False, True],
                              kind="stable").reset_index(drop=True)
    even = n_test * k / n_train
    never = int((n_topk == 0).sum())
    st.caption(f"{method} at checkpoint {ck}: in how many of the {n_test} test prompts' top {k} each training "
               f"sample appears (an even spread would be {even:.1f} each); {never} of {n_train} training samples "
               "are never in a top k. n_top1: how many test prompts rank it first.")
    st.dataframe(table, hide_index=True, width="stretch", key="topk_table",
                 column_config={"share": st.column_config.NumberColumn(format="%.2f")})
    downloads(table, f"{run}_ckpt{ck}_{method}_top{k}_counts", "topk")


# ---------------------------------------------------------------------------------------------- page


st.title("Dataset")
st.caption("The samples behind a run, and the training samples the attribution methods keep pointing at.")
try:
    con = cursor()
    run = pick_run(con)
    if run is not None:
        ck = pick_checkpoint(con, run)
        info = store.run_info(con, run)
        all_samples = store.samples(con, run)
        labels = list(info.get("labels") or sorted(all_samples.label.dropna().unique().tolist()))
        show_browser(con, run, labels)
        show_composition(all_samples)
        show_topk(con, run, ck, info, all_samples[all_samples.split == "train"].reset_index(drop=True))
except store.StoreError as e:
    st.error(f"The store could not be read: {e}")
