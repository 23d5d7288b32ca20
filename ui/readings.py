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


# ---------------------------------------------------------------------------------------------- a run's leaderboard

# the influence-function methods (an inverse-Hessian-vector product in the score); GradSim and TracIn are not
IF_METHODS = ("exact", "datainf", "datainf_proj", "lissa", "lissa_paper", "ekfac", "kfac")
CHANCE_P = 0.05  # "beats chance": one-sided binomial test of the test prompts' top-1 hits at this level


def beats_chance(hits: int, n_test: int, chance: float) -> bool:
    """Whether ``hits`` same-label top-1 samples out of ``n_test`` test prompts are more than luck at rate
    ``chance`` (one-sided binomial test, p < :data:`CHANCE_P`)."""
    from scipy.stats import binomtest

    if n_test <= 0 or not 0 <= chance < 1:
        return False
    return bool(binomtest(hits, n_test, chance, alternative="greater").pvalue < CHANCE_P)


def _names(methods: list[str], limit: int = 4) -> str:
    shown = ", ".join(f"**{esc(m)}**" for m in methods[:limit])
    return shown + (f" and {len(methods) - limit} more" if len(methods) > limit else "")


def _prompts(n: int) -> str:
    return f"{n} prompt{'' if n == 1 else 's'}"


def leaderboard_reading(last: pd.DataFrame, n_test: int, model: str = "", n_labels: int | None = None,
                        epochs: int | None = None) -> list[str]:
    """Two or three sentences on one run's leaderboard at one checkpoint (``last``: ``store.leaderboard`` rows
    with method, acc, chance_acc and, optionally, coverage and k): which methods beat chance on Acc@1, which beat
    RepSim on Acc@1 and on Coverage@k, and by how much (Acc@1 also in test prompts, of ``n_test``); where an
    influence-function method beats RepSim, how that differs from the paper and why it can happen (``model``,
    ``n_labels`` and ``epochs`` describe the run; each is left out when unknown)."""
    has_cov = "coverage" in last.columns and last.coverage.notna().any()
    rows = last.dropna(subset=["acc"]).sort_values(["acc", *(["coverage"] if has_cov else []), "method"],
                                                   ascending=[False, *([False] if has_cov else []), True])
    if rows.empty or n_test <= 0:
        return []
    chance = float(rows.chance_acc.iloc[0])
    acc = dict(zip(rows.method, rows.acc.astype(float)))
    cov = dict(zip(rows.method, rows.coverage.astype(float))) if has_cov else {}
    hits = {m: int(round(a * n_test)) for m, a in acc.items()}
    above = [m for m in rows.method if beats_chance(hits[m], n_test, chance)]
    below = [m for m in rows.method if m not in above]
    basis = f"chance {fmt(chance, 2)}; one-sided binomial test over the {n_test} test prompts, p < {CHANCE_P}"
    out = []
    if above:
        top = max(hits[m] for m in above)
        best = [m for m in above if hits[m] == top]
        tail = f"; {_names(below)} {'does' if len(below) == 1 else 'do'} not" if below else ""
        out.append(f"{len(above)} of {len(rows)} methods beat chance on Acc@1 ({basis}). Best, at "
                   f"{fmt(top / n_test, 2)} ({top} of {n_test}, +{fmt(top / n_test - chance, 2)} over chance): "
                   f"{_names(best)}{tail}.")
    else:
        out.append(f"No method beats chance on Acc@1 ({basis}): on this run no method finds a same-label training "
                   "sample for a test prompt more often than a random pick would.")
    if "repsim" not in acc:
        return out
    k = f"@{int(rows.k.iloc[0])}" if "k" in rows.columns and pd.notna(rows.k.iloc[0]) else "@k"
    rep = acc["repsim"]
    by_acc = [m for m in rows.method if hits[m] > hits["repsim"]]
    by_cov = [m for m in sorted(cov, key=lambda m: (-cov[m], m)) if cov[m] > cov["repsim"] + 1e-12]
    head = (f"**RepSim** is at Acc@1 {fmt(rep, 2)} ({hits['repsim']} of {n_test})"
            + (f" and Coverage{k} {fmt(cov['repsim'], 2)}" if cov else ""))
    if by_acc:
        on_acc = (f"{len(by_acc)} method{'s beat' if len(by_acc) > 1 else ' beats'} it on Acc@1: "
                  + ", ".join(f"**{esc(m)}** by {fmt(acc[m] - rep, 2)} ({_prompts(hits[m] - hits['repsim'])})"
                              for m in by_acc[:4]) + (f" and {len(by_acc) - 4} more" if len(by_acc) > 4 else ""))
    else:
        ties = sum(hits[m] == hits["repsim"] for m in rows.method) - 1
        on_acc = "no method beats it on Acc@1" + (f" ({ties} tie with it)" if ties else "")
    if not cov:
        on_cov = ""
    elif by_cov:
        more = f" and {len(by_cov) - 4} more" if len(by_cov) > 4 else ""
        on_cov = (f"; on Coverage{k}, " + ", ".join(f"**{esc(m)}** by {fmt(cov[m] - cov['repsim'], 2)}"
                                                    for m in by_cov[:4]) + more
                  + (" does" if len(by_cov) == 1 else " do"))
    else:
        on_cov = f"; none does on Coverage{k}"
    ifs = [m for m in rows.method if m in IF_METHODS and (m in by_acc or m in by_cov)]
    paper = "" if ifs or by_acc or by_cov else " — as in the paper, where RepSim beat the influence functions"
    out.append(f"{head}; {on_acc}{on_cov}{paper}.")
    if ifs:
        why = []
        if model:
            why.append(f"a small model ({esc(model)}: few LoRA parameters, so the inverse-Hessian approximations "
                       "stay close to exact)")
        if n_labels:
            why.append(f"few classes ({int(n_labels)}, each with its own kind of answer)")
        if epochs:
            why.append(f"a short fine-tuning ({int(epochs)} epoch{'' if epochs == 1 else 's'}: the adapter is "
                       "still near its start and the training losses far from zero, so each sample's gradient "
                       "still points towards its class)")
        because = ""
        if why:
            listed = ", ".join(why[:-1]) + (" and " if len(why) > 1 else "") + why[-1]
            because = f" That can happen with {listed}."
        out.append(f"Influence functions ({_names(ifs)}) beat RepSim here, unlike the paper's result on "
                   f"Llama-2-7B, where RepSim beat every influence function.{because}")
    return out
