"""Explore's token view: the drilled-into training sample's text with each token shaded by its share of the
score for the chosen test prompt (:mod:`engine.scoring.tokens`).

Shares are computed on demand by a background process (:mod:`ui.token_job`): one job computes every token-splitting
method and every test prompt for the selected training sample and the top-ranked samples of the shown methods,
so switching method or test prompt afterwards is instant. The page never imports torch. Text reaches the screen
HTML-escaped (:func:`ui.common.esc`) inside our own spans, or through dataframes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from engine.catalog.methods import method_info
from engine.paths import default_store_path, default_tokens_dir
from engine.scoring.token_files import TokenResult, manifest_id, no_token_view, result_path
from ui import token_job
from ui.auth import read_only
from ui.common import esc, md, qp_get, qp_set

POSITIVE = (33, 102, 172)  # blue: the token raises the score (makes the sample look more responsible)
NEGATIVE = (214, 96, 77)  # red: the token lowers it
MAX_EXTRA = 15  # training samples computed besides the selected one (the shown methods' top ranks)


def _rgba(rgb, alpha: float) -> str:
    return f"rgba({rgb[0]}, {rgb[1]}, {rgb[2]}, {alpha:.3f})"


def shaded_html(pieces: list[str], shares, prompt_len: int) -> str:
    """The tokens as escaped spans shaded by share (opacity ∝ |share| / max |share|), a marker where the response
    starts; hovering a token shows its share."""
    shares = np.asarray(shares, dtype=np.float64)
    top = float(np.nanmax(np.abs(shares))) if shares.size and np.isfinite(shares).any() else 0.0
    total = float(np.nansum(shares))
    spans = []
    for t, (piece, c) in enumerate(zip(pieces, shares)):
        if t == prompt_len:
            spans.append('<span style="color:#888;font-size:0.8em;padding:0 4px">▌response ▸</span>')
        alpha = 0.0 if top == 0 or not np.isfinite(c) else 0.85 * abs(c) / top
        colour = _rgba(POSITIVE if c >= 0 else NEGATIVE, alpha)
        share = f" ({c / total:+.1%} of the score)" if total else ""
        spans.append(f'<span title="token {t}: {c:+.4g}{share}" style="background:{colour};border-radius:3px;'
                     f'padding:1px 0">{esc(piece)}</span>')
    body = "".join(spans)
    return ('<div style="white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:0.9em;'
            f'line-height:1.9;border:1px solid #ddd;border-radius:6px;padding:10px">{body}</div>')


def legend_html(top: float) -> str:
    """Two colour ramps: red (lowers the score) to blue (raises it), with the largest share's value."""
    def ramp(rgb):
        return "".join(f'<span style="display:inline-block;width:14px;height:12px;background:{_rgba(rgb, a)}">'
                       "</span>" for a in (0.85, 0.6, 0.35, 0.12)[:: 1 if rgb == NEGATIVE else -1])

    return (f'<div style="font-size:0.85em;margin:4px 0 10px">lowers the score {ramp(NEGATIVE)} '
            f'<span style="padding:0 6px">0</span> {ramp(POSITIVE)} raises it'
            f'<span style="color:#666"> &nbsp;(full colour = ±{esc(f"{top:.3g}")}; hover a token for its share)'
            "</span></div>")


def visible(piece: str) -> str:
    """A token's text with its whitespace shown (␣ space, ⏎ newline, ⇥ tab); ∅ for an empty piece."""
    return piece.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥") or "∅"


def top_tokens(pieces: list[str], shares, prompt_len: int, n: int = 8) -> pd.DataFrame:
    """The ``n`` tokens with the largest positive shares and the ``n`` with the most negative: token (whitespace
    made visible), position, part (prompt / response), share, and share of the pair's score."""
    shares = np.asarray(shares, dtype=np.float64)
    total = float(np.nansum(shares))
    order = np.argsort(-shares, kind="stable")
    picked = [i for i in order[:n] if shares[i] > 0] + [i for i in order[::-1][:n] if shares[i] < 0]
    return pd.DataFrame({
        "token": [visible(pieces[i]) for i in picked],
        "position": [int(i) for i in picked],
        "part": ["prompt" if i < prompt_len else "response" for i in picked],
        "share": [float(shares[i]) for i in picked],
        "of score": [float(shares[i] / total) if total else float("nan") for i in picked],
    })


def _run_folder(info: dict) -> Path | None:
    folder = info.get("folder")
    return Path(folder) if folder and Path(folder).is_dir() else None


def _methods(info: dict, shown: list[str]) -> list[str]:
    """The run's token-splitting methods, the ones shown in Explore first."""
    split = [m for m in info["methods"] if method_info(m).tokens] if info.get("methods") else []
    return [m for m in shown if m in split] + [m for m in split if m not in shown]


def _estimate(tokens_dir: Path, run: str, manifest: str) -> str:
    """The last job's time on this run, for the button's caption."""
    for p in sorted((tokens_dir / run / manifest).glob("*.json"))[:1]:
        r = TokenResult.read(p)
        if r is not None and r.seconds:
            return f"about {r.seconds:.0f} s on this run"
    return "a gradient pass over the training set: seconds on the tiny model, about a minute on SmolLM2 (CPU)"


def section(con, run: str, info: dict, ck: int, tid: int, trid: int, shown: list[str],
            tables: dict[str, pd.DataFrame]) -> None:
    """The token view of training sample ``trid`` for test prompt ``tid`` (Explore's drill-down)."""
    st.markdown(f"**Which tokens of training sample {trid} carry its score for test prompt {tid}**")
    methods = _methods(info, shown)
    skipped = [m for m in shown if m not in methods]
    if info.get("kind") != "pipeline" or not methods:
        st.info("Token shares need a model and a gradient method: this run "
                + ("holds imported scores." if info.get("kind") != "pipeline" else "has no gradient method."))
        return
    folder = _run_folder(info)
    if folder is None:
        st.info(f"The run folder of {run} is not on this machine: token shares are computed from it.")
        return
    tokens_dir = default_tokens_dir(default_store_path())
    manifest = manifest_id(folder)
    result = TokenResult.read(result_path(tokens_dir, run, manifest, ck, trid))
    if result is None:
        _request(run, ck, trid, tid, tables, tokens_dir, manifest)
        return
    methods = [m for m in methods if m in result.shares]  # the result holds the run's splitting methods
    if not methods:
        st.warning(f"The stored token shares of sample {trid} hold none of this run's methods.")
        return
    wanted = qp_get("tokm", methods[0])
    method = st.selectbox("Method (token view)", methods, index=methods.index(wanted) if wanted in methods else 0,
                          key="tokm", help="Methods whose score is a sum over the training sample's tokens.")
    qp_set(tokm=method)
    if tid >= len(result.shares[method]):
        st.warning(f"The stored token shares of sample {trid} have no {method} row for test prompt {tid}.")
        return
    shares = np.asarray(result.shares[method][tid], dtype=np.float64)
    score, stored = result.scores[method][tid], result.stored.get(method, [float("nan")] * (tid + 1))[tid]
    st.markdown(legend_html(float(np.nanmax(np.abs(shares))) if shares.size else 0.0), unsafe_allow_html=True)
    st.markdown(shaded_html(result.pieces, shares, result.prompt_len), unsafe_allow_html=True)
    st.caption(f"{len(shares)} tokens; the shares add up to {score:.5g} (the run stored {stored:.5g}). A token's "
               "share is what the score gains through the adapter's action on that token's activations: blue "
               "tokens make the sample look more responsible for the test prompt, red ones less. "
               f"Computed in {result.seconds:.0f} s.")
    c1, c2 = st.columns([3, 2])
    with c1:
        st.dataframe(top_tokens(result.pieces, shares, result.prompt_len), hide_index=True, width="stretch",
                     key="token_table", column_config={
                         "share": st.column_config.NumberColumn(format="%.4g"),
                         "of score": st.column_config.NumberColumn(format="percent")})
    with c2:
        prompt = float(shares[:result.prompt_len].sum())
        st.metric("Prompt tokens' part", f"{prompt / score:.0%}" if score else "–",
                  help="of the pair's score; the response tokens hold the rest")
    notes = {m: no_token_view(m) for m in skipped}
    if notes:
        st.caption("No token view for " + "; ".join(f"{esc(m)}: {esc(why)}" for m, why in notes.items()) + ".")


def _request(run: str, ck: int, trid: int, tid: int, tables: dict[str, pd.DataFrame], tokens_dir: Path,
             manifest: str) -> None:
    """No result yet: the running job's progress, or a button that starts one."""
    job = token_job.running(tokens_dir, run)
    if job is not None:
        _progress(tokens_dir, run, ck, trid, job)
        return
    failed = token_job.last_line(tokens_dir, run)
    if failed.startswith("error:"):
        st.warning(f"The last token job stopped: {failed}")
    if read_only():
        st.caption("Token shares of this sample have not been computed, and this deployment is read-only.")
        return
    extra = []
    for t in tables.values():
        extra += [int(i) for i in t.train_id.head(5) if int(i) != trid and int(i) not in extra]
    ids = [trid, *extra[:MAX_EXTRA]]
    st.caption(f"Not computed yet for checkpoint {ck}: a background job takes the gradients again "
               f"({_estimate(tokens_dir, run, manifest)}) and splits every gradient method's scores of training "
               f"sample {trid} and of the shown methods' top samples over their tokens.")
    if st.button(f"Compute token shares ({len(ids)} training samples)", key="tok_compute"):
        token_job.launch(default_store_path(), tokens_dir, run, ck, ids)
        st.rerun()


@st.fragment(run_every=2)
def _progress(tokens_dir: Path, run: str, ck: int, trid: int, job: dict) -> None:
    """Polls the job; when it ends, reruns the page so the result is read."""
    if token_job.running(tokens_dir, run) is None:
        st.rerun()
    mine = job.get("checkpoint") == ck and trid in job.get("train_ids", [])
    what = "this sample" if mine else f"training samples {job.get('train_ids')} at checkpoint {job.get('checkpoint')}"
    st.info(f"Computing token shares of {what}: {md(token_job.last_line(tokens_dir, run)) or 'starting…'}")
