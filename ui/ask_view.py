"""How the Ask page draws an answer (a fresh one, or a saved one reopened by its URL: the same shape, one drawing).

The ranked samples of each method side by side, as on Explore: text (cut in the tables, whole in an expander),
label when the run has labels, a score bar scaled to the scores in view (methods' scores are on very different
scales); then how much the methods agree: the share of their top k they have in common. Query and dataset text
reaches the screen through dataframes, ``st.code`` / ``st.text`` or :func:`ui.common.md`, never as raw markdown.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

import store
from engine.catalog.methods import QUERY_KINDS, cannot_answer
from engine.errors import InputError
from engine.query.client import ServerError
from ui.common import md
from ui.labels import has_label

PER_ROW = 3  # methods side by side; more wrap onto the next row
TEXT_CUT = 200  # characters of a sample's prompt/response in a table cell
FULL_TEXT = 20  # ranks whose full text the expander shows


def cut(text, limit: int = TEXT_CUT) -> str:
    """Plain text on one line, cut at ``limit`` characters (for dataframes, which escape on their own)."""
    t = " ".join(str(text).split())
    return t if len(t) <= limit else t[: limit - 1] + "…"


def overlap_matrix(top: dict[str, list]) -> pd.DataFrame:
    """Top-k overlap between every two methods' rankings: ``|A ∩ B| / min(|A|, |B|)`` of their ranked ids (1 on
    the diagonal; NaN when a method ranked nothing). Methods in the order of ``top``."""
    names = list(top)
    ids = {m: {int(i) for i, _ in top[m]} for m in names}
    out = pd.DataFrame(np.nan, index=names, columns=names)
    for a in names:
        for b in names:
            n = min(len(ids[a]), len(ids[b]))
            if n:
                out.loc[a, b] = len(ids[a] & ids[b]) / n
    return out


def methods_table(methods: list[str], index: dict | None) -> pd.DataFrame:
    """Which of the run's methods can answer each kind of question, and why not: from the run's query index
    (``index.json``), or without one from the catalog (what an index would allow). Columns: method, prompt,
    candidate (✓ / ✗), why not."""
    rows = []
    for name in methods:
        row, why = {"method": name}, []
        for kind in QUERY_KINDS:
            if index is not None:
                reason = (index.get("cannot") or {}).get(kind, {}).get(name)
                can = name in (index.get(f"{kind}_methods") or [])
                reason = reason or (None if can else "not in the run's query index")
            else:
                reason = cannot_answer(name, kind)
            row[kind] = "✗" if reason else "✓"
            if reason:
                why.append(f"{kind}: {reason}")
        rows.append({**row, "why not": "; ".join(why)})
    return pd.DataFrame(rows, columns=["method", *QUERY_KINDS, "why not"])


def score_column(values: pd.Series, label: str = "score") -> st.column_config.ProgressColumn:
    """A bar per score, scaled from min(0, lowest) to the highest score in view."""
    v = values.astype(float)
    finite = v[np.isfinite(v)]
    lo = float(min(0.0, finite.min())) if len(finite) else 0.0
    hi = float(finite.max()) if len(finite) else 1.0
    return st.column_config.ProgressColumn(label, format="%.4g", min_value=lo, max_value=hi if hi > lo else lo + 1.0,
                                           width=110)


def ranked_table(ranked: list, samples: pd.DataFrame, labelled: bool) -> pd.DataFrame:
    """One method's ranking joined to its samples' text: rank, score, [label], prompt, response, id."""
    by_id = samples.set_index("sample_id")
    rows = []
    for rank, (i, s) in enumerate(ranked, start=1):
        sample = by_id.loc[int(i)] if int(i) in by_id.index else None
        rows.append({"rank": rank, "score": float(s),
                     "label": None if sample is None else sample.label,
                     "prompt": "" if sample is None else str(sample.prompt),
                     "response": "" if sample is None else str(sample.response), "id": int(i)})
    table = pd.DataFrame(rows, columns=["rank", "score", "label", "prompt", "response", "id"])
    return table if labelled else table.drop(columns=["label"])


def question(answer: dict) -> None:
    """The question as asked: its texts (the response marked when the model wrote it), notes, and the methods that
    could not answer with the reason."""
    what = "Prompt" if answer["kind"] == "prompt" else "Candidate training prompt"
    p, r = st.columns([3, 2])
    with p:
        st.caption(what)
        st.code(answer["prompt"], language=None, wrap_lines=True)
    with r:
        st.caption("The model's answer (generated greedily at the run's last checkpoint)" if answer["generated"]
                   else "Response")
        if answer["response"]:
            st.code(answer["response"], language=None, wrap_lines=True)
        else:
            st.caption("(empty: " + ("the model answered nothing)" if answer["generated"] else "no response given)"))
    for note in answer.get("notes") or []:
        st.info(md(note))
    for method, why in (answer.get("cannot") or {}).items():
        st.caption(f"**{md(method)}** cannot answer this: {md(why)}")


def rankings(con, run: str, answer: dict, key: str) -> dict[str, pd.DataFrame]:
    """Each method's ranked samples, side by side (``PER_ROW`` a row); returns the tables shown."""
    top = answer["top"]
    if not top:
        st.info("None of the chosen methods could answer this question.")
        return {}
    ids = {int(i) for ranked in top.values() for i, _ in ranked}
    samples = store.answer_samples(con, run, answer["kind"], ids)
    labelled = any(has_label(v) for v in samples.label)
    side = "training samples" if answer["kind"] == "prompt" else "test prompts"
    st.subheader(f"Top {answer['k']} {side} per method")
    tables: dict[str, pd.DataFrame] = {}
    names = list(top)
    for start in range(0, len(names), PER_ROW):
        row = names[start:start + PER_ROW]
        for method, col in zip(row, st.columns(PER_ROW)):
            with col:
                tables[method] = method_column(method, top[method], samples, labelled, side, key)
    return tables


def method_column(method: str, ranked: list, samples: pd.DataFrame, labelled: bool, side: str, key: str
                  ) -> pd.DataFrame:
    """One method's ranked table (score bars) and the full text of its first ranks."""
    st.markdown(f"#### {md(method)}")
    table = ranked_table(ranked, samples, labelled)
    shown = table.assign(prompt=table.prompt.map(cut), response=table.response.map(cut))
    st.dataframe(shown, hide_index=True, width="stretch", key=f"{key}_table_{method}", column_config={
        "rank": st.column_config.NumberColumn("#", width=40),
        "score": score_column(table.score),
        "prompt": st.column_config.TextColumn("prompt", width="large"),
        "id": st.column_config.NumberColumn("train id" if side.startswith("training") else "test id",
                                            width="small")})
    with st.expander("Full text of the top samples"):
        for r in table.head(FULL_TEXT).itertuples(index=False):
            label = f" · {md(r.label)}" if labelled and has_label(r.label) else ""
            st.markdown(f"**#{int(r.rank)}** · id {int(r.id)}{label}")
            st.text(f"{r.prompt}\n→ {r.response}")
    return table


def agreement(top: dict[str, list], key: str) -> None:
    """How much the methods' top k overlap, as a heatmap (two or more methods)."""
    if len([m for m in top if top[m]]) < 2:
        return
    st.subheader("Agreement between the methods")
    st.caption("The share of their top k that two methods have in common. Agreement is not correctness: methods "
               "can agree on the wrong samples.")
    m = overlap_matrix(top)
    fig = px.imshow(m, text_auto=".2f", zmin=0.0, zmax=1.0, color_continuous_scale="Blues", aspect="auto",
                    labels={"color": "overlap"})
    fig.update_layout(height=max(260, 40 * len(m) + 120), margin=dict(l=10, r=10, t=30, b=10))
    st.plotly_chart(fig, width="stretch", key=f"{key}_agreement")


def show(con, run: str, answer: dict, key: str = "ask") -> dict[str, pd.DataFrame]:
    """The whole answer: the question, the rankings side by side, the agreement between the methods."""
    question(answer)
    tables = rankings(con, run, answer, key)
    agreement(answer["top"], key)
    total = (answer.get("seconds") or {}).get("total_s")
    if total is not None:
        st.caption(f"Answered in {total:.2f} s by the query server.")
    return tables


def from_server(label: str, call, done) -> dict | None:
    """``call(say)`` (a :mod:`ui.ask` function returning ``(result, retried)``) inside a status box labelled
    ``label`` that shows the server's progress; ``done(result)``: the box's label once answered. On a refusal or a
    server that does not answer, says why and returns None; a retry on a new server is said as a warning."""
    with st.status(label, expanded=False) as status:
        try:
            result, retried = call(lambda text: status.update(label=text))
        except InputError as e:
            status.update(label="Refused", state="error")
            st.error(f"The query server refused: {md(e)}")
            return None
        except ServerError as e:
            status.update(label="The query server is not answering", state="error")
            st.error(f"No answer: {md(e)}. The server's log is `query-server.log` beside the runs folder.")
            return None
        status.update(label=done(result), state="complete")
    if retried:
        st.warning(md(retried))
    return result
