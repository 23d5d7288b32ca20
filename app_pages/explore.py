"""Explore: for one test prompt, the training samples each attribution method ranks highest, side by side.

No torch and no SQL here: everything comes from ``store`` through ``ui.common.cursor()``. State lives in the
URL: ``run`` and ``ckpt`` (shared with the other pages), ``methods`` (comma-separated, up to three), ``k``,
``test`` (the test sample id), ``train`` (the training sample drilled into) and ``dist`` (whether the score
distribution is drawn). What is the same for every prompt of a run (its samples, the choosers' option texts, the
dominant samples) is read once and cached; a run too large to list or plot sample by sample gets a searchable
drill-down chooser and a score distribution drawn on request from box statistics. Heavy modules are imported
before any ``st.*`` call. Dataset text only reaches the screen escaped: through dataframes, ``st.code`` /
``st.text`` or :func:`md` (HTML- and markdown-escaped).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

import store
from engine.catalog.methods import default_methods
from engine.paths import default_store_path
from ui import token_view
from ui.auth import require_login
from ui.common import chart_text, cursor, export_buttons, md, pick_checkpoint, pick_run, qp_get, qp_set
from ui.labels import NEEDS_LABELS, has_label

st.set_page_config(page_title="Explore · Influence Explorer", layout="wide")
require_login()

MAX_METHODS = 3  # when the URL names none: the first of engine.catalog.methods.default_methods
MAX_K = 200  # slider ceiling: longer rankings are unreadable side by side
TEXT_CUT = 200  # characters of prompt/response shown in table cells (the full text is in the expanders)
ALL_LABELS = "All labels"
RUN_WIDGETS = ("methods", "k", "test", "train", "test_label", "test_search", "train_search")  # tied to one run
LIST_MAX = 1000  # training samples listed in the drill-down chooser at most (a longer list costs the browser)
POINTS_MAX = 2000  # training samples up to which the distribution sends every score (above: box statistics)


# ---------------------------------------------------------------------------------------------- helpers


def cut(text, limit: int = TEXT_CUT) -> str:
    """Plain text cut at ``limit`` characters (for widgets and dataframes, which escape on their own)."""
    t = " ".join(str(text).split())
    return t if len(t) <= limit else t[: limit - 1] + "…"


def option_labels(samples: pd.DataFrame) -> dict[int, str]:
    """Each sample's option text in the choosers (``#id · label · prompt``; ``#id · prompt`` without labels), by
    sample id."""
    return {int(i): f"#{int(i)} · " + (f"{cut(lab, 40)} · " if has_label(lab) else "") + cut(p, 90)
            for i, lab, p in zip(samples.sample_id, samples.label, samples.prompt)}


@st.cache_data(max_entries=16, show_spinner=False)
def run_samples(_con, store_path: str, run: str, stamp) -> dict:
    """The run's test and training samples with their option texts, read once per store, run and ingest time
    (``stamp``: a re-ingested run is read again), not on every rerun."""
    tests = store.samples(_con, run, split="test")
    train = store.samples(_con, run, split="train")
    return {"tests": tests, "train": train, "test_labels": option_labels(tests), "train_labels": option_labels(train)}


@st.cache_data(max_entries=64, show_spinner=False)
def dominant(_con, store_path: str, run: str, stamp, method: str, ck: int) -> pd.DataFrame:
    """The training samples some test prompt ranks first, most often first (:func:`store.top1_counts`); the
    same for every test prompt, so cached like :func:`run_samples`."""
    counts = store.top1_counts(_con, run, method, ck)
    return counts[counts.n_top1 > 0].reset_index(drop=True)


def cache_key(info: dict) -> tuple[str, object]:
    """What the cached reads are keyed on besides the run: the store file and the run's ingest time."""
    return str(default_store_path()), info.get("ingested_at")


def methods_from_url(available: list[str]) -> list[str]:
    """The ``methods`` query parameter, unknown names and duplicates dropped; when none is left, the catalog's
    default (:func:`engine.catalog.methods.default_methods`, the first :data:`MAX_METHODS`)."""
    raw = qp_get("methods", "") or ""
    wanted: list[str] = []
    for name in raw.split(","):
        name = name.strip()
        if name in available and name not in wanted:
            wanted.append(name)
    return wanted[:MAX_METHODS] or default_methods(available, MAX_METHODS)


def summarise(table: pd.DataFrame, k: int, n_same_train: int) -> dict:
    """Per-prompt numbers of one method's ranking: top-1 correct, coverage at k, best possible coverage."""
    hits = int(table.same_label.sum()) if len(table) else 0
    return {
        "top1": bool(len(table)) and bool(table.same_label.iloc[0]),
        "hits": hits,
        "coverage": hits / k if k else float("nan"),
        "best": min(k, n_same_train) / k if k else float("nan"),
    }


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The ranked table as shown: label marked ✓ (same as the test label) or ✗ (different), long text cut."""
    out = table[["rank", "score", "label", "prompt", "response", "train_id"]].copy()
    mark = np.where(table.same_label.astype(bool), "✓ ", "✗ ")
    out["label"] = [m + str(lab) for m, lab in zip(mark, table.label)]
    out["prompt"] = out.prompt.map(cut)
    out["response"] = out.response.map(cut)
    return out


SAME_BG, OTHER_BG = "background-color: #d9f2e3", "background-color: #fbe0e0"


def coloured(shown: pd.DataFrame, same: pd.Series):
    """The label column coloured green (same label as the test sample) or red (different)."""
    colours = [SAME_BG if bool(v) else OTHER_BG for v in same]
    return shown.style.apply(lambda _: colours, subset=["label"])


def score_column(values: pd.Series, label: str = "score") -> st.column_config.ProgressColumn:
    """A bar per score, scaled to the scores in view (they are on very different scales across methods)."""
    finite = values[np.isfinite(values.astype(float))] if len(values) else values
    lo = float(min(0.0, finite.min())) if len(finite) else 0.0
    hi = float(finite.max()) if len(finite) else 1.0
    if hi <= lo:
        hi = lo + 1.0
    return st.column_config.ProgressColumn(label, format="%.4g", min_value=lo, max_value=hi, width=110)


TABLE_COLUMNS = {
    "rank": st.column_config.NumberColumn("#", width=40),
    "label": st.column_config.TextColumn("label (✓ = test label)", width="medium"),
    "prompt": st.column_config.TextColumn("prompt", width="large"),
    "response": st.column_config.TextColumn("response"),
    "train_id": st.column_config.NumberColumn("train id", width="small"),
}


# ---------------------------------------------------------------------------------------------- sections


def sidebar(con, run: str, info: dict) -> tuple[int, list[str], int]:
    ck = pick_checkpoint(con, run)
    available = info["methods"]
    methods = st.sidebar.multiselect(
        "Methods (up to 3)", available, default=methods_from_url(available), max_selections=MAX_METHODS,
        key="methods", help="Each method gets a column with its own ranking.")
    qp_set(methods=",".join(methods) if methods else None)
    n_train = int(info["n_train"] or 0)
    top = max(1, min(n_train, MAX_K))
    k_default = int(info.get("k_default") or 10)
    k = qp_get("k", k_default, int)
    k = min(max(k, 1), top)
    if top > 1:
        k = st.sidebar.slider("k (training samples per method)", 1, top, k, key="k")
    qp_set(k=k)
    st.sidebar.caption(f"{info['n_train']} training and {info['n_test']} test samples; run default k = "
                       f"{k_default}.")
    return ck, methods, k


def choose_test(con, run: str, tests: pd.DataFrame, texts: dict[int, str]) -> pd.Series | None:
    """The test-prompt chooser (text filter, label filter, selectbox bound to ``test``); the chosen row."""
    st.subheader("Test prompt")
    c1, c2 = st.columns([2, 1])
    search = c1.text_input("Search test prompts", key="test_search", placeholder="words in the prompt or response")
    labels = [ALL_LABELS] + sorted(tests.label.dropna().unique().tolist())
    label = c2.selectbox("Label", labels, key="test_label") if len(labels) > 1 else ALL_LABELS
    shown = tests
    if search or label != ALL_LABELS:
        shown = store.samples(con, run, split="test", label=None if label == ALL_LABELS else label,
                              search=search or None)
    if shown.empty:
        st.warning("No test prompt matches this filter.")
        return None
    ids = shown.sample_id.astype(int).tolist()
    by_id = shown.set_index("sample_id")
    wanted = qp_get("test", ids[0], int)
    tid = st.selectbox(
        f"Test sample ({len(ids)} of {len(tests)})", ids, index=ids.index(wanted) if wanted in ids else 0,
        key="test", format_func=texts.__getitem__)
    qp_set(test=tid)
    row = by_id.loc[tid]
    p, r = st.columns([3, 2])
    with p:
        st.caption("Prompt")
        st.code(str(row.prompt), language=None, wrap_lines=True)
    with r:
        st.caption("Response")
        st.code(str(row.response), language=None, wrap_lines=True)
    if has_label(row.label):
        st.markdown(f"**Label:** {md(row.label)}")
    return row


def rankings(con, run: str, ck: int, methods: list[str], tid: int, k: int, test_label, train: pd.DataFrame
             ) -> dict[str, pd.DataFrame]:
    """One column per method: per-prompt summary and ranked top-k table; returns the tables shown."""
    st.subheader(f"Top {k} training samples per method")
    n_same = int((train.label == test_label).sum())
    tables: dict[str, pd.DataFrame] = {}
    for method, col in zip(methods, st.columns(len(methods))):
        with col:
            st.markdown(f"#### {md(method)}")
            try:
                table = store.top_k(con, run, method, ck, tid, k)
            except store.StoreError as e:
                st.warning(f"No ranking for {method} at checkpoint {ck}: {e}")
                continue
            tables[method] = table
            if not has_label(test_label):
                unlabelled_table(table, method)
                continue
            s = summarise(table, k, n_same)
            m1, m2 = st.columns(2)
            m1.metric("Top-1 correct", "✓" if s["top1"] else "✗",
                      help="Does the highest-ranked training sample share the test sample's label?")
            m2.metric(f"Coverage@{k}", f"{s['coverage']:.2f}",
                      help=f"{s['hits']} of the top {k} share the test label; best possible {s['best']:.2f}.")
            st.dataframe(coloured(display_table(table), table.same_label), hide_index=True, width="stretch",
                         key=f"table_{method}", column_config={**TABLE_COLUMNS, "score": score_column(table.score)})
            with st.expander("Full text of the top samples"):
                for r in table.head(20).itertuples(index=False):
                    st.markdown(f"**#{int(r.rank)}** · train {int(r.train_id)} · {md(r.label)} "
                                f"{'✓' if r.same_label else '✗'}")
                    st.text(f"{r.prompt}\n→ {r.response}")
    return tables


def unlabelled_table(table: pd.DataFrame, method: str) -> None:
    """One method's ranked top k of a run without labels: no top-1 / coverage figures and no same-label marks."""
    m1, m2 = st.columns(2)
    m1.metric("Top-1 correct", NEEDS_LABELS, help="Whether the top sample shares the test label: the data has none.")
    m2.metric("Coverage@k", NEEDS_LABELS, help="How many of the top k share the test label: the data has none.")
    shown = display_table(table).drop(columns=["label"])
    st.dataframe(shown, hide_index=True, width="stretch", key=f"table_{method}",
                 column_config={**TABLE_COLUMNS, "score": score_column(table.score)})
    with st.expander("Full text of the top samples"):
        for r in table.head(20).itertuples(index=False):
            st.markdown(f"**#{int(r.rank)}** · train {int(r.train_id)}")
            st.text(f"{r.prompt}\n→ {r.response}")


BOX_COLOURS = {"same": "#d62728", "different": "#7f7f7f"}


def box_stats(scores: np.ndarray) -> dict:
    """Plotly's box of ``scores`` (its default linear quartiles; whiskers at the furthest scores within 1.5 IQR of
    the box) and the mask of the scores beyond the whiskers, which it draws as points."""
    q1, median, q3 = np.quantile(scores, [0.25, 0.5, 0.75])
    lo, hi = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
    inside = (scores >= lo) & (scores <= hi)
    return {"q1": q1, "median": median, "q3": q3, "lowerfence": scores[inside].min(),
            "upperfence": scores[inside].max(), "outside": ~inside}


def box_figure(long: pd.DataFrame, methods: list[str]) -> go.Figure:
    """One panel per method, a box per training label (red: the test prompt's label), from box statistics of every
    training sample's score, with the scores beyond the whiskers as points (hover: the training sample)."""
    fig = make_subplots(rows=1, cols=len(methods), shared_yaxes=True, subplot_titles=methods,
                        horizontal_spacing=0.04)
    for col, method in enumerate(methods, start=1):
        part = long[long.method == method]
        for group in ("same", "different"):
            rows = part[part["same label"] == group]
            if rows.empty:
                continue
            boxes, out = [], []
            for label, g in rows.groupby("label", sort=False):
                b = box_stats(g.score.to_numpy(dtype=np.float64))
                boxes.append((label, b))
                out.append(g[b["outside"]])
            stat = {key: [b[key] for _, b in boxes] for key in ("q1", "median", "q3", "lowerfence", "upperfence")}
            fig.add_trace(go.Box(y=[label for label, _ in boxes], orientation="h", name=group, legendgroup=group,
                                 showlegend=col == 1, marker_color=BOX_COLOURS[group], boxpoints=False, **stat),
                          row=1, col=col)
            points = pd.concat(out)
            fig.add_trace(go.Scatter(x=points.score, y=points.label, mode="markers", name=group, legendgroup=group,
                                     showlegend=False, marker=dict(color=BOX_COLOURS[group], size=4),
                                     customdata=points.train_id,
                                     hovertemplate="train %{customdata}<br>score %{x:.4g}<extra></extra>"),
                          row=1, col=col)
    return fig


def distribution(con, run: str, ck: int, methods: list[str], tid: int, train: pd.DataFrame, test_label) -> None:
    st.subheader("Score distribution by training label")
    if not has_label(test_label):
        st.caption(f"By training label: {NEEDS_LABELS} (this run's data has none).")
        return
    st.caption("Every training sample's score for this test prompt, one box per label; the test prompt's own "
               "label should stand out on the right. Each method has its own scale.")
    # Drawn at once on runs whose every score is sent as a point; on larger runs on request, since the charting
    # library alone costs a fresh page about half a second in the browser. The URL (dist=1/0) keeps the choice.
    wanted = qp_get("dist", int(len(train) <= POINTS_MAX), int) == 1
    if not st.toggle("Draw the score distribution", value=wanted, key="dist"):
        qp_set(dist=0)
        return
    qp_set(dist=1)
    train_sorted = train.sort_values("sample_id")
    parts = []
    for method in methods:
        try:  # this prompt's full row (one row group of the run folder's score file), in train sample-id order
            row = store.score_row(con, run, method, ck, tid)
        except store.StoreError as e:
            st.warning(f"No score distribution for {method}: {e}")
            continue
        if len(row) != len(train_sorted):
            continue
        parts.append(pd.DataFrame({
            "method": method, "train_id": train_sorted.sample_id.to_numpy(), "label": train_sorted.label.to_numpy(),
            "score": row, "same label": np.where(train_sorted.label.to_numpy() == test_label, "same", "different"),
        }))
    if not parts:
        st.info("No scores to plot.")
        return
    long = pd.concat(parts, ignore_index=True).dropna(subset=["score"])
    long["label"] = long.label.map(lambda v: chart_text(v, 40))  # long class names must not squeeze the plots
    n_labels = long.label.nunique()
    shown = [m for m in methods if m in set(long.method)]
    if len(train_sorted) <= POINTS_MAX:  # every score goes to the browser, drawn as a point
        fig = px.box(long, x="score", y="label", color="same label", facet_col="method", orientation="h",
                     points="all", hover_data=["train_id"], color_discrete_map=BOX_COLOURS,
                     category_orders={"method": methods, "same label": ["same", "different"]})
        fig.update_xaxes(matches=None, showticklabels=True)
        fig.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1]))
    else:  # the same boxes from statistics computed here: a few hundred numbers instead of every score
        fig = box_figure(long, shown)
    # boxmode overlay: a label has only "same" or only "different" boxes, so they sit on its row, not beside it
    fig.update_layout(height=max(320, 28 * n_labels + 120), margin=dict(l=10, r=10, t=60, b=10), boxmode="overlay",
                      yaxis_title=None, legend=dict(orientation="h", yanchor="bottom", y=1.06, x=0,
                                                    title_text="vs the test prompt's label:"))
    st.plotly_chart(fig, width="stretch", key="distribution")


def train_choices(con, run: str, labels: dict[int, str], tables: dict[str, pd.DataFrame], wanted: int, k: int
                  ) -> list[int] | None:
    """The training samples the drill-down chooser lists on a run too large to list them all (``LIST_MAX``): those
    a search box finds (by id, or words of the prompt or response), else the shown methods' top ``k`` for this test
    prompt and the one in the URL. None when the search finds nothing."""
    search = st.text_input("Find a training sample", key="train_search",
                           placeholder="its id, or words in its prompt or response")
    text = search.strip()
    if not text:
        ids = list(dict.fromkeys(int(i) for t in tables.values() for i in t.train_id))
        ids = ids if wanted in ids else [wanted, *ids]
        st.caption(f"Listed: the {len(ids)} training samples the shown methods rank in their top {k} (and the "
                   f"one chosen); search to drill into any of the {len(labels)}.")
        return ids
    digits = text.lstrip("#")
    ids = [int(digits)] if digits.isdigit() and int(digits) in labels else []
    found = store.samples(con, run, split="train", search=text, limit=LIST_MAX)
    ids += [i for i in found.sample_id.astype(int).tolist() if i not in ids]
    if not ids:
        st.warning("No training sample matches this search.")
        return None
    return ids[:LIST_MAX]


def drill(con, run: str, ck: int, methods: list[str], k: int, train: pd.DataFrame, labels: dict[int, str],
          tables: dict[str, pd.DataFrame], default_train: int | None, stamp: tuple) -> None:
    st.subheader("Drill into a training sample")
    by_id = train.set_index("sample_id")
    first = int(train.sample_id.iloc[0])
    fallback = default_train if default_train in labels else first
    wanted = qp_get("train", fallback, int)
    wanted = wanted if wanted in labels else fallback
    if len(labels) <= LIST_MAX:
        ids = train.sample_id.astype(int).tolist()
    else:
        ids = train_choices(con, run, labels, tables, wanted, k)
        if ids is None:
            return
    trid = st.selectbox(
        "Training sample", ids, index=ids.index(wanted) if wanted in ids else 0, key="train",
        format_func=labels.__getitem__, help="Defaults to the first method's top-ranked sample for the chosen test "
        "prompt.")
    qp_set(train=trid)
    row = by_id.loc[trid]
    st.code(f"{row.prompt}\n→ {row.response}", language=None, wrap_lines=True)
    labelled = has_label(row.label)
    if labelled:
        st.markdown(f"**Label:** {md(row.label)}")
    st.markdown(f"**Test prompts that rank training sample {trid} in their top {k}**")
    for method, col in zip(methods, st.columns(len(methods))):
        with col:
            st.markdown(f"##### {md(method)}")
            try:
                hits = store.test_prompts_ranking_train(con, run, method, ck, trid, k)
            except store.StoreError as e:
                st.warning(str(e))
                continue
            st.caption(f"{len(hits)} test prompt(s)" + (f"; {int(hits.same_label.sum())} share its label."
                                                        if labelled else "."))
            view = hits[["test_id", "rank", "score", *(["label", "same_label"] if labelled else []), "prompt"]].copy()
            if labelled:
                view["same_label"] = np.where(hits.same_label.astype(bool), "✓ same", "✗ different")
            view["prompt"] = view.prompt.map(cut)
            st.dataframe(view, hide_index=True, width="stretch", key=f"drill_{method}",
                         column_config={"test_id": st.column_config.NumberColumn("test id", width="small"),
                                        "same_label": st.column_config.TextColumn("vs train label"),
                                        "score": st.column_config.NumberColumn(format="%.4g")})

    st.markdown("**Dominant samples**: how many test prompts rank each training sample first")
    st.caption("A single training sample ranked first for most test prompts is a failure sign: the method "
               "explains everything with one sample instead of the test prompt's own class.")
    for method, col in zip(methods, st.columns(len(methods))):
        with col:
            st.markdown(f"##### {md(method)}")
            try:
                top = dominant(con, *stamp, method, ck)
            except store.StoreError as e:
                st.warning(str(e))
                continue
            if not top.empty:
                lead = top.iloc[0]
                st.metric("Most often ranked first", f"#{int(lead.train_id)}",
                          f"{int(lead.n_top1)} test prompt(s), {lead.share:.0%}", delta_color="off",
                          delta_arrow="off")
            view = top[["train_id", "n_top1", "share", *(["label"] if labelled else []), "prompt"]].head(15).copy()
            view["prompt"] = view.prompt.map(cut)
            st.dataframe(view, hide_index=True, width="stretch", key=f"dominant_{method}",
                         column_config={"train_id": st.column_config.NumberColumn("train id", width="small"),
                                        "n_top1": st.column_config.NumberColumn("# top-1", width="small"),
                                        "share": st.column_config.ProgressColumn("share", format="%.2f",
                                                                                 min_value=0.0, max_value=1.0)})


def export(tables: dict[str, pd.DataFrame], run: str, ck: int, tid: int, k: int) -> None:
    if not tables:
        return
    full = pd.concat([t.assign(method=m) for m, t in tables.items()], ignore_index=True)
    full.insert(0, "method", full.pop("method"))
    full.insert(0, "test_id", tid)
    full.insert(0, "checkpoint", ck)
    full.insert(0, "run", run)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{run}_ck{ck}_test{tid}_top{k}")
    st.subheader("Export")
    export_buttons(full, stem, "dl", "Ranked tables")


# ---------------------------------------------------------------------------------------------- page


def main() -> None:
    st.title("Explore")
    st.caption("Pick a test prompt: each method's highest-ranked training samples, side by side. A trustworthy "
               "method ranks training samples of the test prompt's own label first.")
    con = cursor()
    run = pick_run(con)
    if run is None:
        return
    if st.session_state.get("_explore_run") not in (None, run):
        # Another run: its methods, k range and sample ids differ, so the widgets start again from the URL
        # (whose values are checked against the new run) instead of keeping stale selections.
        for key in RUN_WIDGETS:
            st.session_state.pop(key, None)
    st.session_state["_explore_run"] = run
    info = store.run_info(con, run)
    if not info["methods"]:
        st.info(f"Run {run} has no scores yet.")
        return
    ck, methods, k = sidebar(con, run, info)
    key = cache_key(info)
    samples = run_samples(con, key[0], run, key[1])
    tests, train = samples["tests"], samples["train"]
    if tests.empty or train.empty:
        st.info("This run has no test or no training samples.")
        return
    row = choose_test(con, run, tests, samples["test_labels"])
    if row is None:
        return
    tid = int(row.name)
    if not methods:
        st.info("Pick at least one method in the sidebar.")
        return
    tables = rankings(con, run, ck, methods, tid, k, row.label, train)
    distribution(con, run, ck, methods, tid, train, row.label)
    first = next(iter(tables.values()), None)
    default_train = int(first.train_id.iloc[0]) if first is not None and len(first) else None
    drill(con, run, ck, methods, k, train, samples["train_labels"], tables, default_train, (key[0], run, key[1]))
    trid = st.session_state.get("train", default_train)
    if trid is not None:  # the token view of the drilled-into sample (ui.token_view)
        token_view.section(con, run, info, ck, tid, int(trid), methods, tables)
    export(tables, run, ck, tid, k)


try:
    main()
except store.StoreError as e:
    st.error(f"The store could not be read: {e}")
