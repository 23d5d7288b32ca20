"""Plain-language readings of the analysis charts: pure functions from the analysis tables to a few sentences.

Kept out of the pages so they can be unit-tested. Every number quoted comes from the table passed in; text that
came from a dataset (labels, group descriptions) is HTML-escaped here, since the pages render markdown.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from engine import metrics
from ui.common import esc

METHOD_NAMES = {
    "datainf": "DataInf", "lissa": "LiSSA (run to convergence)", "lissa_paper": "LiSSA as in the paper's code",
    "lissa_steps": "LiSSA after T steps", "exact_blockdiag": "exact iHVP per LoRA matrix (block-diagonal)",
    "datainf_blockdiag": "DataInf per LoRA matrix (block-diagonal)", "ekfac": "EK-FAC (per LoRA matrix)",
    "kfac": "K-FAC (per LoRA matrix)",
}


def fmt(x: float, digits: int = 3) -> str:
    """A number for prose: 3 significant digits, scientific below 1e-3; "n/a" for NaN/None."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if x != 0 and abs(x) < 1e-3:
        return f"{x:.1e}"
    return f"{x:.{digits}g}"


def correlation(x, y) -> tuple[float, float]:
    """(Spearman, Pearson) of the points with both values finite; NaN for fewer than 3 such points (two points
    always correlate perfectly: nothing to read) or a constant side. Spearman is ``engine.metrics.spearman``."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    return metrics.spearman(x, y), float(np.corrcoef(x, y)[0, 1])


# ---------------------------------------------------------------------------------------------- iHVP error


def ihvp_reading(rows: pd.DataFrame, lambda_c: float) -> list[str]:
    """Sentences on the iHVP-error table at damping ``lambda_c``."""
    at = rows[(rows.lambda_c == lambda_c) & (rows.method != "lissa_steps")]
    if at.empty:
        return []
    out = []
    dims = at.groupby("level").dim.first().sort_values()
    small, big = dims.index[0], dims.index[-1]

    def err(method, level):
        r = at[(at.method == method) & (at.level == level)]
        return float(r.rel_error.iloc[0]) if len(r) else float("nan")

    d_small, d_big = err("datainf", small), err("datainf", big)
    out.append(f"**DataInf** has relative error {fmt(d_small)} on {int(dims[small])} parameters and {fmt(d_big)} "
               f"on {int(dims[big])} (λ_c = {fmt(lambda_c)}). "
               + ("Its error grows with the number of parameters, as the paper reports: swapping the inverse and "
                  "the mean over training samples is only accurate for small blocks or strong damping."
                  if d_big > d_small else "Here its error does not grow with the number of parameters."))
    lissa = at[(at.method == "lissa") & (at.level == big)]
    if len(lissa):
        r = lissa.iloc[0]
        steps = int(r.iterations) if pd.notna(r.iterations) else "?"
        if str(r.note).startswith("converged"):
            tail = "; with enough steps it is the exact iHVP."
        else:
            tail = (f" — it stopped at the step cap before its tolerance: the part of v outside the span of the "
                    f"training gradients (eigenvalue λ) converges slowest, yet the scores it gives already rank "
                    f"training samples with Spearman {fmt(float(r.spearman))} against the exact ones.")
        out.append(f"**LiSSA run to convergence** reaches relative error {fmt(float(r.rel_error))} on all "
                   f"{int(r.dim)} parameters after {steps} steps ({esc(r.note or 'status unknown')}){tail}")
    paper = at[(at.method == "lissa_paper") & (at.level == big)]
    if len(paper):
        r = paper.iloc[0]
        out.append(f"**LiSSA as in the paper's code** (3 steps) is at relative error {fmt(float(r.rel_error))} and "
                   f"cosine {fmt(float(r.cosine))}: it is about 4 × the test gradient, not an iHVP, so its ranking "
                   "is GradSim's.")
    ek = at[(at.method == "ekfac") & (at.level == big)]
    if len(ek):
        bd_err = at[(at.method == "exact_blockdiag") & (at.level == big)].rel_error
        ref = f" (the exact per-matrix inverse: {fmt(float(bd_err.iloc[0]))})" if len(bd_err) else ""
        out.append(f"**EK-FAC** (per LoRA matrix, Kronecker eigenbasis with refitted eigenvalues) is at relative "
                   f"error {fmt(float(ek.rel_error.iloc[0]))}{ref} and ranks training samples with Spearman "
                   f"{fmt(float(ek.spearman.iloc[0]))} against the exact iHVP.")
    bd = at[(at.method == "exact_blockdiag") & (at.level == big)]
    if len(bd):
        out.append(f"Treating every LoRA matrix as its own block with its own damping (what the engine's "
                   f"methods do) is at relative error {fmt(float(bd.rel_error.iloc[0]))} from the full inverse "
                   f"over all parameters; the scores' ranking agrees with Spearman "
                   f"{fmt(float(bd.spearman.iloc[0]))}.")
    return out


# ---------------------------------------------------------------------------------------------- convergence


def convergence_reading(ev: pd.DataFrame, drift: pd.DataFrame, lb: pd.DataFrame) -> list[str]:
    """Sentences on losses / generation accuracy per epoch, score stability and Acc@1 per checkpoint."""
    out = []
    if not ev.empty:
        first, last = ev.iloc[0], ev.iloc[-1]
        out.append(f"Test loss goes from {fmt(first.test_loss)} (epoch {int(first.checkpoint)}) to "
                   f"{fmt(last.test_loss)} (epoch {int(last.checkpoint)}); training loss from "
                   f"{fmt(first.train_loss)} to {fmt(last.train_loss)}. Greedy generations contain the reference "
                   f"answer for {fmt(100 * first.gen_acc)} % of test prompts before fine-tuning and "
                   f"{fmt(100 * last.gen_acc)} % after.")
        if last.train_loss < last.test_loss * 0.5:
            out.append("The training loss is far below the test loss: the model memorises its training set.")
    if not drift.empty:
        last_ck = drift.checkpoint.max()
        d = drift[drift.checkpoint == last_ck].sort_values("spearman_prev")
        out.append(f"Between the last two checkpoints the most stable scores are **{esc(d.iloc[-1].method)}**'s "
                   f"(rank correlation {fmt(d.iloc[-1].spearman_prev)}), the least stable **{esc(d.iloc[0].method)}**'s "
                   f"({fmt(d.iloc[0].spearman_prev)}). Scores that still move a lot between epochs rank training "
                   "samples differently depending on when training stopped.")
    if not lb.empty and lb.checkpoint.nunique() > 1:
        first_ck, last_ck = lb.checkpoint.min(), lb.checkpoint.max()
        a = lb[lb.checkpoint == first_ck].set_index("method").acc
        b = lb[lb.checkpoint == last_ck].set_index("method").acc
        delta = (b - a).dropna().sort_values()
        if len(delta):
            hi, lo = delta.index[-1], delta.index[0]
            low_word = "the largest drop" if delta.iloc[0] < 0 else "the smallest gain"
            out.append(f"Acc@1 from checkpoint {int(first_ck)} to {int(last_ck)}: the largest gain is "
                       f"**{esc(hi)}** ({fmt(a[hi])} → {fmt(b[hi])}), {low_word} **{esc(lo)}** "
                       f"({fmt(a[lo])} → {fmt(b[lo])}).")
    return out


# ---------------------------------------------------------------------------------------------- retraining


def retrain_reading(groups: pd.DataFrame, methods: pd.DataFrame, output: str = "mean_abs_dloss") -> list[str]:
    """Sentences on parameter change vs output change, and on which method predicts the output change."""
    out = []
    control = groups[groups.kind == "none"]
    rest = groups[groups.kind != "none"]
    if len(control):
        c = control.iloc[0]
        out.append("The control retraining (nothing removed) reproduces the original adapter "
                   + ("bit for bit, so every change below is caused by the removal."
                      if bool(c.identical) else
                      f"up to ‖ΔW‖ = {fmt(c.param_change)} (rounding differences between processes): that is the "
                      "noise floor for the changes below."))
    if len(rest) >= 3:
        rho, r = correlation(rest.param_change, rest[output])
        out.append(f"Across {len(rest)} retrainings, parameter change and output change ({output}) have Spearman "
                   f"{fmt(rho)} (Pearson {fmt(r)}). "
                   + ("A weak link means the size of the weight change says little about how much the model's "
                      "behaviour changed — the paper's point about why parameter-space influence can mislead."
                      if not rho > 0.7 else "They move together here."))
    if not methods.empty:
        m = methods.sort_values("spearman_pooled", ascending=False)
        best, worst = m.iloc[0], m.iloc[-1]
        out.append(f"Predicting the change of each test loss by the sum of the removed samples' scores, "
                   f"**{esc(best.method)}** does best (Spearman {fmt(best.spearman_pooled)} over "
                   f"{int(best.n_pairs)} group × test pairs) and **{esc(worst.method)}** worst "
                   f"({fmt(worst.spearman_pooled)}). This check needs no labels: it asks whether a method predicts "
                   "what retraining actually does.")
        if m.lds.notna().any():
            l = m.sort_values("lds", ascending=False).iloc[0]
            out.append(f"Linear datamodeling score over {int(l.n_random)} random subsets: best "
                       f"**{esc(l.method)}** ({fmt(l.lds)}). With few subsets this is a noisy estimate.")
    return out
