"""Dataset: browse a run's training and test samples, its class composition, which training samples the
attribution methods rank in the top k again and again, and how hard the task is before any model looks at it
(response lengths per label, the lexical-shortcut rate).

No torch and no SQL here: everything comes from ``store`` through ``ui.common.cursor()``. State lives in the
URL: ``run``, ``ckpt`` (shared with the other pages), ``split``, ``label``, ``q`` (sample browser) and
``method``, ``k`` (top-k counts). Heavy modules are imported before any ``st.*`` call.
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

import store
from engine.data.tasks.difficulty import length_stats, lexical_shortcut, sample_text
from ui import self_influence_view
from ui.auth import require_login
from ui.common import chart_text, cursor, export_buttons, pick_checkpoint, pick_run, qp_get, qp_set
from ui.labels import NEEDS_LABELS

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
                         key="label") if labels else ALL_LABELS
    q = c3.text_input("Search prompt and response (plain text, case-insensitive)", value=qp_get("q", ""), key="q")
    qp_set(split=None if split == "all" else split, label=None if label == ALL_LABELS else label, q=q or None)

    df = store.samples(con, run, split=None if split == "all" else split,
                       label=None if label == ALL_LABELS else label, search=q or None)
    st.caption(f"{len(df)} sample(s)")
    df = df if labels else df.drop(columns=["label"])
    st.dataframe(df, hide_index=True, width="stretch", key="samples_table")
    downloads(df, f"{run}_samples", "samples")


def show_composition(all_samples: pd.DataFrame) -> None:
    st.subheader("Class composition")
    if all_samples.empty:
        st.info("This run has no samples.")
        return
    if all_samples.label.isna().all():
        counts = all_samples.split.value_counts()
        st.caption(f"By class: {NEEDS_LABELS} (this run's data has none). {int(counts.get('train', 0))} training "
                   f"and {int(counts.get('test', 0))} test samples.")
        return
    comp = all_samples.groupby(["split", "label"]).size().rename("n").reset_index()
    comp["label"] = comp.label.map(lambda v: chart_text(v, 60))  # long labels: cut, the full one in the table
    labels = sorted(comp.label.unique())
    # horizontal bars: label names read horizontally however long they are
    fig = px.bar(comp, y="label", x="n", color="split", barmode="group", orientation="h", text="n",
                 category_orders={"split": ["test", "train"], "label": labels}, labels={"n": "samples"},
                 color_discrete_map={"train": "#0068c9", "test": "#83c9ff"})
    fig.update_traces(textposition="outside", textangle=0, cliponaxis=False)
    fig.update_layout(margin=dict(l=10, r=30, t=40, b=10), height=110 + 34 * len(labels), yaxis_title="",
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0, title=None, traceorder="reversed"))
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
        **({"label": train.label.to_numpy()} if train.label.notna().any() else {}),
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


@st.cache_data(max_entries=16, show_spinner="Measuring the task's difficulty ...")
def difficulty(run: str, _samples: pd.DataFrame) -> tuple[tuple[float | None, float | None], pd.DataFrame]:
    """(shortcut rate, chance, length table) of a run; run folders are immutable, so the run name is the key.
    Without labels the rate and chance are None and the lengths are per split only."""
    train, test = _samples[_samples.split == "train"], _samples[_samples.split == "test"]
    labelled = _samples.label.notna().all()
    sc = lexical_shortcut([sample_text(p, r) for p, r in zip(train.prompt, train.response)], train.label.tolist(),
                          [sample_text(p, r) for p, r in zip(test.prompt, test.response)],
                          test.label.tolist()) if labelled else None
    rows = []
    for split, part in (("train", train), ("test", test)):
        groups = part.label.tolist() if labelled else ["(all)"] * len(part)
        for x in length_stats(part.response.tolist(), groups):
            rows.append({"split": split, **({"label": x.label} if labelled else {}), "n": x.n, "mean": x.mean,
                         "min": x.min, "q25": x.q25, "median": x.median, "q75": x.q75, "max": x.max})
    return (sc.rate, sc.chance) if sc else (None, None), pd.DataFrame(rows)


def show_difficulty(run: str, all_samples: pd.DataFrame) -> None:
    st.subheader("Task difficulty")
    if (all_samples.split == "train").sum() == 0 or (all_samples.split == "test").sum() == 0:
        st.info("Difficulty needs training and test samples.")
        return
    (rate, chance), lengths = difficulty(run, all_samples)
    c1, c2 = st.columns([1, 3])
    if rate is None:
        c1.metric("Lexical shortcut", NEEDS_LABELS, help="BM25's top sample sharing the test label: no labels here")
        c2.markdown("The lexical-shortcut rate (how often the training sample that shares the most words with a "
                    f"test prompt has its label) {NEEDS_LABELS}; this run's data has none.")
        st.caption("Response length in words (whitespace-separated) per split.")
        st.dataframe(lengths, hide_index=True, width="stretch", key="difficulty_lengths")
        return
    c1.metric("Lexical shortcut", f"{rate:.2f}", help="BM25 over prompt + response, lower-cased words")
    c2.markdown(
        f"For **{rate:.0%}** of the test prompts, the training sample that shares the most words with it (BM25 "
        f"over prompt and response) has the same label; a random training sample would in {chance:.0%}. "
        "Near 100 % means word overlap alone finds the right class, so a method's high accuracy here says "
        "little about attribution.")
    st.caption("Response length in words (whitespace-separated) per split and label.")
    st.dataframe(lengths, hide_index=True, width="stretch", key="difficulty_lengths",
                 column_config={c: st.column_config.NumberColumn(format="%.1f") for c in ("mean", "q25", "median", "q75")})


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
        show_difficulty(run, all_samples)
        self_influence_view.section(con, run)  # ui.self_influence_view
except store.StoreError as e:
    st.error(f"The store could not be read: {e}")
