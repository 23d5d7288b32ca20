"""The Ask page's token view: one drilled sample of an answer, its tokens shaded by their share of the score.

For a new prompt the drilled item is a ranked training sample (which of its tokens make it look responsible for
the prompt); for a candidate text it is a ranked test prompt (which tokens of the candidate carry its influence on
that prompt). The shares come from the query server (``engine.query.session.QuerySession.tokens``: the math of
:mod:`engine.scoring.tokens`, the same as Explore's token view); they are drawn with :mod:`ui.token_view`'s
shading. The page never imports torch. Computed results stay in the browser session, so switching the method or
coming back to a sample is instant.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from engine.catalog.methods import method_info
from engine.paths import default_runs_dir, default_store_path
from ui import ask as ask_server
from ui.ask_view import from_server
from ui.common import esc
from ui.token_view import legend_html, shaded_html, top_tokens


def drill_items(answer: dict) -> list[tuple[int, str]]:
    """The answer's ranked ids, each once, best rank first: ``(id, "rank r for method m")`` (the best rank it has)."""
    best: dict[int, tuple[int, str]] = {}
    for method, ranked in answer["top"].items():
        for rank, (i, _) in enumerate(ranked, start=1):
            if int(i) not in best or rank < best[int(i)][0]:
                best[int(i)] = (rank, method)
    return [(i, f"rank {r} for {m}") for i, (r, m) in sorted(best.items(), key=lambda kv: (kv[1][0], kv[0]))]


def splitting_methods(answer: dict) -> list[str]:
    """The answer's methods whose score is a sum over tokens (the others have no token view)."""
    return [m for m in answer["top"] if method_info(m).tokens]


def answer_score(answer: dict, method: str, item: int) -> float | None:
    """The score ``method`` gave ``item`` in the answer, when it is among its ranks."""
    for i, score in answer["top"].get(method, []):
        if int(i) == item:
            return float(score)
    return None


def section(answer: dict, key: str = "ask") -> None:
    """The token view of a drilled item of ``answer`` (a saved answer: ``store.saved_query``)."""
    prompt_kind = answer["kind"] == "prompt"
    side = "training sample" if prompt_kind else "test prompt"
    st.subheader("Token view of a drilled " + side)
    methods = splitting_methods(answer)
    if not methods:
        st.info("None of this answer's methods splits its score over tokens (representation methods and the "
                "baselines have no such split).")
        return
    items = drill_items(answer)
    if not items:
        return
    labels = dict(items)
    c1, c2 = st.columns([3, 2])
    item = c1.selectbox(f"Drill into a {side}", [i for i, _ in items], key=f"{key}_tok_item",
                        format_func=lambda i: f"{side} {i} ({labels[i]})")
    st.caption(("Which tokens of the training sample make it look responsible for the question."
                if prompt_kind else
                "Which tokens of the candidate text carry its influence on that test prompt."))
    done = st.session_state.setdefault("ask_token_results", {})
    cache_key = f"{answer.get('ask_id')}:{item}"
    if cache_key not in done:
        if st.button("Show its tokens", key=f"{key}_tok_go",
                     help="The query server takes the per-token gradients of the sample at the run's checkpoint"):
            result = _compute(answer, item)
            if result is None:
                return
            done[cache_key] = result
        else:
            return
    result = done[cache_key]
    shown = [m for m in methods if m in result["shares"]]
    if not shown:
        st.warning("The token view holds none of this answer's methods.")
        return
    method = c2.selectbox("Method", shown, key=f"{key}_tok_method")
    shares = np.asarray(result["shares"][method], dtype=np.float64)
    st.markdown(legend_html(float(np.nanmax(np.abs(shares))) if shares.size else 0.0), unsafe_allow_html=True)
    st.markdown(shaded_html(result["pieces"], shares, result["prompt_len"]), unsafe_allow_html=True)
    total = result["scores"][method]
    ranked = answer_score(answer, method, item)
    known = f" (the answer's score: {ranked:.5g})" if ranked is not None else ""
    st.caption(f"{len(shares)} tokens; the shares add up to {total:.5g}{known}. Blue tokens raise the score, red "
               f"ones lower it. Computed in {result.get('seconds', 0):.1f} s.")
    st.dataframe(top_tokens(result["pieces"], shares, result["prompt_len"]), hide_index=True, width="stretch",
                 key=f"{key}_tok_table", column_config={
                     "share": st.column_config.NumberColumn(format="%.4g"),
                     "of score": st.column_config.NumberColumn(format="percent")})
    skipped = result.get("skipped") or {}
    if skipped:
        st.caption("No token view for " + "; ".join(f"{esc(m)}: {esc(why)}" for m, why in skipped.items()) + ".")


def _compute(answer: dict, item: int) -> dict | None:
    """Ask the query server for the token view (starting one if none answers); None after saying why not."""
    store_path = default_store_path()
    return from_server("Asking the query server for the token view…",
                       lambda say: ask_server.tokens(answer, item, store_path, default_runs_dir(store_path), say),
                       lambda r: f"Token view computed in {r.get('seconds', 0):.1f} s")
