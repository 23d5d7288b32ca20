"""The Behaviour page's parts: choosing a group of test prompts, the behaviour ranking, its concentration, and the
group-level heatmap. No torch and no SQL: everything comes from ``store``.

A group of test prompts is chosen by label (every test prompt with one of the labels), by a search (test prompts
whose prompt or response contains the text) or by ids pasted as ``3, 5, 7-9``. URL keys: ``<key>_by`` (label |
search | ids | none) and ``<key>`` (the labels comma-joined, the search text or the ids text).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

import store
from engine.evaluation.concentration import concentration
from ui.common import chart_text, esc, md, qp_get, qp_set
from ui.labels import NEEDS_LABELS

MODES = {"label": "by label", "search": "by search", "ids": "test ids"}
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")
MAX_IDS = 100000


def parse_ids(text: str, valid: set[int] | None = None) -> tuple[list[int], str | None]:
    """``"3, 5, 7-9"`` -> ``([3, 5, 7, 8, 9], None)``; on bad input ``([], message)`` naming the bad part or the
    ids that are not test samples (``valid``). Commas, spaces or semicolons separate; ``a-b`` is inclusive."""
    out: set[int] = set()
    for part in re.split(r"[,;\s]+", re.sub(r"\s*-\s*", "-", text or "")):
        if not part:
            continue
        m = _RANGE.match(part)
        if not m:
            return [], f"'{part}' is not an id or a range like 7-9"
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if b < a:
            return [], f"range '{part}' runs backwards"
        if len(out) + (b - a + 1) > MAX_IDS:
            return [], f"more than {MAX_IDS} ids"
        out.update(range(a, b + 1))
    ids = sorted(out)
    if valid is not None:
        unknown = [i for i in ids if i not in valid]
        if unknown:
            more = " …" if len(unknown) > 8 else ""
            return [], f"no test sample {', '.join(map(str, unknown[:8]))}{more}"
    return ids, None


def pick_group(con, run: str, tests: pd.DataFrame, key: str, title: str, optional: bool = False,
               default_labels: list[str] | None = None) -> tuple[list[int], str]:
    """A group of test prompts (widgets bound to the URL); returns ``(test ids, description)``. With ``optional``
    the group may be left empty ("none"). Without labels (an unlabelled run) the group is picked by search or ids.
    """
    labels = sorted(tests.label.dropna().unique().tolist())
    modes = (["none"] if optional else []) + [m for m in MODES if labels or m != "label"]
    wanted = qp_get(f"{key}_by", modes[0])
    by = st.radio(title, modes, index=modes.index(wanted) if wanted in modes else 0, horizontal=True,
                  key=f"{key}_by", format_func=lambda m: MODES.get(m, "none"))
    raw = qp_get(key, "") or ""
    if by == "none":
        qp_set(**{f"{key}_by": by, key: None})
        return [], "none"
    if by == "label":
        chosen = [x for x in raw.split(",") if x in labels] if raw else list(default_labels or labels[:1])
        picked = st.multiselect("Test labels", labels, default=chosen, key=f"{key}_labels")
        qp_set(**{f"{key}_by": by, key: ",".join(picked) or None})
        ids = tests[tests.label.isin(picked)].sample_id.astype(int).tolist()
        return ids, "label " + ", ".join(picked) if picked else "no label"
    if by == "search":
        text = st.text_input("Prompt or response contains", value=raw, key=f"{key}_search")
        qp_set(**{f"{key}_by": by, key: text or None})
        if not text:
            return [], "no search"
        found = store.samples(con, run, split="test", search=text)
        return found.sample_id.astype(int).tolist(), f"search {text!r}"
    text = st.text_input("Test ids (e.g. 3, 5, 7-9)", value=raw, key=f"{key}_ids")
    qp_set(**{f"{key}_by": by, key: text or None})
    ids, error = parse_ids(text, set(tests.sample_id.astype(int)))
    if error:
        st.warning(f"Test ids: {md(error)}")
        return [], "invalid ids"
    return ids, f"{len(ids)} pasted id(s)"


def concentration_panel(ranked: pd.DataFrame, key: str) -> None:
    """Share of the positive influence in the top 10, how many samples hold half of it, and the cumulative curve."""
    c = concentration(ranked.score.to_numpy(), top=10)
    m1, m2, m3 = st.columns(3)
    m1.metric("Top 10 hold", "–" if np.isnan(c.top_share) else f"{c.top_share:.0%}",
              help="of the positive influence (the sum of the positive behaviour scores)")
    m2.metric("Half of it is in", f"{c.n_half} sample(s)" if c.n_positive else "–",
              help="the fewest training samples whose positive scores add up to half the total")
    m3.metric("Positive scores", f"{c.n_positive} of {c.n}")
    if c.n_positive == 0:
        st.info("No training sample has a positive score for this behaviour.")
        return
    k = np.arange(len(c.curve))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=k, y=c.curve, mode="lines", name="this behaviour", line=dict(color="#1f77b4")))
    fig.add_trace(go.Scatter(x=[0, c.n_positive], y=[0, 1], mode="lines", name="even spread",
                             line=dict(color="#7f7f7f", dash="dot")))
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="training samples, largest first",
                      yaxis_title="share of positive influence", yaxis_range=[0, 1.02],
                      legend=dict(orientation="h", y=-0.25), title="Cumulative share of the positive influence")
    st.plotly_chart(fig, width="stretch", key=f"{key}_curve")


def label_bars(ranked: pd.DataFrame, key: str) -> None:
    """Which training labels carry the behaviour: the sum of each label's positive scores, and its mean score
    (a run without labels: says that this needs labels)."""
    if ranked.label.isna().all():
        st.caption(f"Positive influence by training label: {NEEDS_LABELS} (this run's data has none).")
        return
    per = ranked.assign(positive=ranked.score.clip(lower=0)).groupby("label", dropna=False).agg(
        positive=("positive", "sum"), mean=("score", "mean"), n=("score", "size")).reset_index()
    per = per.sort_values("positive", ascending=False)
    per["label"] = per.label.map(lambda v: chart_text(v, 60))
    fig = px.bar(per, x="positive", y="label", orientation="h", hover_data=["mean", "n"],
                 labels={"positive": "sum of positive behaviour scores", "label": "training label"},
                 title="Positive influence by training label")
    fig.update_layout(height=max(260, 26 * len(per) + 110), margin=dict(l=10, r=10, t=40, b=10),
                      yaxis=dict(autorange="reversed"))
    st.plotly_chart(fig, width="stretch", key=f"{key}_labels")


GROUP_METRICS = {
    "share": ("share of the test group's positive influence", ".0%"),
    "mean": ("mean score per (training, test) pair", ".3g"),
    "total": ("total score", ".3g"),
}


def group_heatmap(cells: pd.DataFrame, metric: str, by: str, key: str) -> None:
    """Training group (rows) x test group (columns) heatmap of one ``store.group_influence`` metric."""
    grid = cells.pivot_table(index="train_group", columns="test_group", values=metric, aggfunc="first")
    title, fmt = GROUP_METRICS[metric]
    grid.index = [chart_text(v, 40) for v in grid.index]
    grid.columns = [chart_text(v, 40) for v in grid.columns]
    scale = "Blues" if metric == "share" else "RdBu"
    kw = {"zmin": 0} if metric == "share" else {"color_continuous_midpoint": 0.0}
    fig = px.imshow(grid, text_auto=fmt, aspect="auto", color_continuous_scale=scale, **kw,
                    labels={"x": f"test {by}", "y": f"training {by}", "color": metric})
    fig.update_layout(height=max(320, 34 * len(grid) + 200), margin=dict(l=10, r=10, t=10, b=10))
    fig.update_xaxes(side="top", tickangle=-30)
    st.markdown(f"**{esc(title)}**: training {esc(by)} (rows) × test {esc(by)} (columns)")
    st.plotly_chart(fig, width="stretch", key=key)
