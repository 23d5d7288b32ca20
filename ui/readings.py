"""Plain-language readings of the analysis charts: pure functions from the analysis tables to a few sentences.

Kept out of the pages so they can be unit-tested. Every number quoted comes from the table passed in; text that
came from a dataset (labels, group descriptions) is HTML-escaped here, since the pages render markdown.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from engine.catalog.analyses import METAGRAD, decomposition_summary
from engine.catalog.methods import CATALOG
from engine.evaluation import metrics
from ui.common import esc

METHOD_NAMES = {
    "datainf": "DataInf", "lissa": "LiSSA (run to convergence)", "lissa_paper": "LiSSA as in the paper's code",
    "lissa_steps": "LiSSA after T steps", "exact_blockdiag": "exact iHVP per LoRA matrix (block-diagonal)",
    "datainf_blockdiag": "DataInf per LoRA matrix (block-diagonal)", "ekfac": "EK-FAC (per LoRA matrix)",
    "kfac": "K-FAC (per LoRA matrix)",
    "exact_blockdiag_shared": "control: exact per LoRA matrix, one shared λ",
    "exact_matrix_damping": "control: full inverse, per-matrix λ (damping only)",
}

# The generation-accuracy rule of engine.analysis.outputs.shows_answer, as the pages state it.
GEN_ACC_RULE = ("a greedy generation counts as correct when its generated tokens (the prompt excluded) contain the "
                "reference response, both lowercased and the reference trimmed of surrounding whitespace (the "
                "paper's authors lowercase too)")

# Below this many LDS subsets a per-prompt Spearman (over M points) is too coarse for its bootstrap interval to
# mean much: the Retraining page says so plainly.
LDS_MIN_SUBSETS = 20


def fmt(x: float, digits: int = 3) -> str:
    """A number for prose: 3 significant digits, scientific below 1e-3; "n/a" for NaN/None."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if x != 0 and abs(x) < 1e-3:
        return f"{x:.1e}"
    return f"{x:.{digits}g}"


def correlation(x, y) -> tuple[float, float]:
    """(Spearman, Pearson) of the points with both values finite; NaN for fewer than 3 such points (two points
    always correlate perfectly: nothing to read) or a constant side. Spearman is ``engine.evaluation.metrics.spearman``."""
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
                   f"error {fmt(float(ek.rel_error.iloc[0]))}{ref} from the exact iHVP with the same per-matrix "
                   f"damping, and ranks training samples with Spearman {fmt(float(ek.spearman.iloc[0]))} against it.")
    out += blockdiag_reading(at, big)
    return out


def blockdiag_reading(at: pd.DataFrame, level: str) -> list[str]:
    """What ignoring the empirical Fisher's cross-blocks between LoRA matrices costs, separated from what the
    damping choice does."""
    def row(method):
        r = at[(at.method == method) & (at.level == level)]
        return r.iloc[0] if len(r) else None

    bd, shared, damp = row("exact_blockdiag"), row("exact_blockdiag_shared"), row("exact_matrix_damping")
    if bd is None:
        return []
    out = [f"Treating every LoRA matrix as its own block (what the engine's methods do) is at relative error "
           f"{fmt(float(bd.rel_error))} from the exact iHVP over all {int(bd.dim)} parameters with the same "
           f"per-matrix damping λ_l, and its scores rank training samples with Spearman {fmt(float(bd.spearman))} "
           "against it: that is the cost of ignoring the empirical Fisher's cross-blocks between matrices (with fewer "
           "samples than parameters, sampling noise included)."]
    if shared is not None:
        out.append(f"Control with one shared λ for every matrix: the block-diagonal form is at relative error "
                   f"{fmt(float(shared.rel_error))} (Spearman {fmt(float(shared.spearman))}) from the shared-λ exact "
                   "iHVP.")
    if damp is not None:
        out.append(f"The damping choice alone (the full inverse with per-matrix λ_l against one shared λ) moves the "
                   f"iHVP by relative error {fmt(float(damp.rel_error))} (Spearman {fmt(float(damp.spearman))}): "
                   "when the matrices' gradients differ in scale (LoRA A and B often do, by orders of magnitude), one "
                   "shared λ damps some of them far more than their own λ_l. Comparing the per-matrix forms with a "
                   "shared-λ reference would mix the two effects.")
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


KIND_NAMES = {"noise": "reshuffles (noise floor)", "single": "single samples", "label": "whole labels",
              "random": "random k-sets", "topk": "methods' top k", "lds": "LDS subsets",
              "identity": "nothing removed (check)", "repeat": "removals at a second seed"}
NO_REMOVAL = ("noise", "identity", "repeat")  # retrainings that are not a removal at the original seed


def identity_reading(groups: pd.DataFrame) -> list[str]:
    """The standing check: does the retraining with nothing removed reproduce the original?"""
    check = groups[groups.kind == "identity"]
    if check.empty:
        return []
    if check.identical.fillna(False).astype(bool).all():
        return ["Check passed: retraining with nothing removed reproduces the original adapter bit for bit, so "
                "each removal's change below is the removal's alone."]
    return ["**Check failed: retraining with nothing removed does not reproduce the original adapter** (e.g. a "
            "nondeterministic GPU kernel): every change below also holds that difference."]


def seed_reading(groups: pd.DataFrame, noise: pd.DataFrame) -> list[str]:
    """The removals repeated at a second seed: how much an effect moves with the data order, beside the floor."""
    if "seed_spread" not in groups:
        return []
    rep = groups[groups.seed_spread.notna()]
    if rep.empty:
        return []
    floor = noise.set_index("measure").floor.get("mean_abs_dloss") if not noise.empty else None
    rho = rep.seed_rho.dropna()
    return [f"Repeated at a second data-order seed (against the full set at that seed), the {len(rep)} removals' "
            f"effects on the test losses differ from those at the train seed by {fmt(float(rep.seed_spread.mean()))} "
            f"per prompt on average (largest {fmt(float(rep.seed_spread.max()))}; the effects themselves average "
            f"{fmt(float(rep.mean_abs_dloss.mean()))}), beside a noise floor of {fmt(floor)}. "
            + (f"The same prompts move at both seeds with Spearman {fmt(float(rho.min()))} to "
               f"{fmt(float(rho.max()))} over the removals. " if len(rho) else "")
            + "An effect smaller than its own seed spread is not a property of the removal alone."]


def noise_reading(noise: pd.DataFrame, groups: pd.DataFrame) -> list[str]:
    """The noise floor and how many removals stay inside it."""
    if noise.empty:
        return ["This run has no noise floor (no retrainings of the full set with other data-order seeds): a small "
                "change below cannot be told apart from training noise."]
    floor = noise.set_index("measure")
    n = int(floor.n_seeds.max())
    rest = groups[~groups.kind.isin(NO_REMOVAL)]
    inside = rest.within_noise.fillna(False).astype(bool)
    out = [f"Noise floor: {n} retraining{'s' if n > 1 else ''} of the full set with other data-order seeds (same "
           f"initial weights) change the test loss by up to {fmt(float(floor.loc['mean_abs_dloss', 'floor']))} on "
           f"average per prompt and the weights by up to ‖ΔW‖ = {fmt(float(floor.loc['param_change', 'floor']))}. "
           "Every other retraining keeps the original data order and dropout masks, so only its removal differs; "
           "a change no larger than this floor is marked as inside the noise."]
    if len(rest):
        kinds = rest[inside].kind.value_counts()
        detail = ", ".join(f"{int(c)} {KIND_NAMES.get(k, k)}" for k, c in kinds.items())
        out.append(f"{int(inside.sum())} of {len(rest)} retrainings change the mean |Δ test loss| no more than a "
                   f"reshuffle does{f' ({detail})' if detail else ''}.")
    return out


def kind_figure(row: dict) -> tuple[float, float, str]:
    """``(figure, control, what)`` of one retrain_methods row: the per-prompt Spearman across the kind's groups
    when there is one, else the per-prompt-centred one, else the pooled one over the prompts of a single removal
    (a column-wise question: which prompts does this removal move); control = the row-mean control's same figure.
    Run folders written before the per-prompt figures read the pooled one."""
    for col, ctrl, what in (("per_test", "control_per_test", "per prompt"),
                            ("centred", "control_centred", "centred per prompt"),
                            ("spearman", "control", "pooled over prompts")):
        value, c = row.get(col), row.get(ctrl)
        if value is not None and pd.notna(value):
            return float(value), float(c) if c is not None and pd.notna(c) else float("nan"), what
    return float("nan"), float("nan"), ""


def size_correlations(groups: pd.DataFrame, output: str, min_groups: int = 3) -> list[tuple[int, int, float]]:
    """``(removal size, groups, Spearman of param_change vs output)`` per number of removed samples with at least
    ``min_groups`` removals (reshuffles and the identity check left out): correlated within one size, since both
    sides grow with the size of the removal."""
    rest = groups[~groups.kind.isin(NO_REMOVAL) & groups[output].notna()]
    out = []
    for size, g in rest.groupby("n_removed"):
        if len(g) >= min_groups:
            out.append((int(size), len(g), correlation(g.param_change, g[output])[0]))
    return out



def retrain_reading(groups: pd.DataFrame, methods: pd.DataFrame, output: str = "mean_abs_dloss") -> list[str]:
    """Sentences on parameter change vs output change (within one removal size), and on which method predicts
    the output change, per kind of removal, per test prompt, beside the row-mean control."""
    out = []
    sizes = [(k, n, rho) for k, n, rho in size_correlations(groups, output) if pd.notna(rho)] \
        if "n_removed" in groups else []
    if sizes:
        parts = "; ".join(f"{k} removed ({n} retrainings): Spearman {fmt(rho)}" for k, n, rho in sizes)
        weak = min(rho for _, _, rho in sizes) <= 0.7
        out.append(f"Parameter change vs output change ({output}), within one removal size: {parts}. "
                   + ("A weak link means the size of the weight change says little about how much the model's "
                      "behaviour changed — the paper's point about why parameter-space influence can mislead."
                      if weak else "They move together here.")
                   + " Sizes are kept apart: across sizes both grow with the number of samples removed.")
    if not methods.empty:
        parts = []
        for kind, m in methods.groupby("kind", sort=False):
            figs = [(kind_figure(r), r) for r in m.to_dict("records")]
            figs = [(f, r) for f, r in figs if pd.notna(f[0])]
            if not figs:
                continue
            (value, control, what), best = max(figs, key=lambda x: x[0][0])
            parts.append(f"{KIND_NAMES.get(kind, kind)}: **{esc(best['method'])}** ({fmt(value)} {what}, "
                         f"row-mean control {fmt(control)}"
                         + ("; no better than the control" if pd.notna(control) and value <= control else "")
                         + ")")
        if parts:
            out.append("Predicting each test loss's change by the sum of the removed samples' scores, the best "
                       "method per kind of removal — " + "; ".join(parts) + ". Each figure is a Spearman across "
                       "the removals of one kind for the same test prompt, averaged over prompts (centred per "
                       "prompt with two removals; pooled over prompts with one, which asks which prompts the "
                       "removal moves). The row-mean control replaces every score by the method's mean score "
                       "for the prompt: it knows how strongly a method reacts to each prompt, not which training "
                       "sample matters. No labels are involved.")
    return out


# ---------------------------------------------------------------------------------------------- a run's leaderboard

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
    # the influence functions (an inverse-Hessian-vector product in the score: the catalog's ``influence``)
    ifs = [m for m in rows.method if m in CATALOG and CATALOG[m].influence and (m in by_acc or m in by_cov)]
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


def difference_reading(a: str, b: str, top1_a, top1_b) -> str:
    """One sentence: is method ``a``'s Acc@1 lead over ``b`` more than the noise of the test set? ``top1_a`` and
    ``top1_b``: per test prompt, whether its top-1 training sample has its label (the same prompts, in the same
    order); the 95 % interval of the difference is a paired bootstrap over the prompts
    (``engine.evaluation.metrics.paired_bootstrap_ci``). An interval that holds 0 is "within noise"."""
    x, y = np.asarray(top1_a, dtype=float), np.asarray(top1_b, dtype=float)
    diff = float((x - y).mean()) if x.size else float("nan")
    lo, hi = metrics.paired_bootstrap_ci(x, y)
    span = f"Acc@1 {'+' if diff >= 0 else ''}{fmt(diff, 2)}, 95 % interval [{fmt(lo, 2)}, {fmt(hi, 2)}]"
    head = f"**{esc(a)}** vs **{esc(b)}**: {span} over the {_prompts(x.size)} (paired bootstrap)"
    if not (lo <= 0 <= hi):
        return f"{head}: more than the noise of this test set."
    return f"{head}: **within noise** — this run does not tell them apart; more test prompts would."


def lds_reading(lds: pd.DataFrame) -> list[str]:
    """The LDS per method with its interval, and a plain warning when there are too few subsets."""
    if lds.empty:
        return []
    m = lds.dropna(subset=["lds"]).sort_values("lds", ascending=False)
    M, alpha = int(lds.n_subsets.iloc[0]), float(lds.alpha.iloc[0])
    out = []
    if len(m):
        best = m.iloc[0]
        overlap = [r.method for r in m.iloc[1:].itertuples() if r.lds_hi >= best.lds_lo]
        names = ", ".join(f"**{esc(x)}**" for x in overlap[:4]) + (f" and {len(overlap) - 4} more"
                                                                     if len(overlap) > 4 else "")
        worst = m.iloc[-1]
        out.append(f"Linear datamodeling score over {M} random subsets keeping {fmt(100 * alpha)} % of the training "
                   f"set: best **{esc(best.method)}** with {fmt(best.lds)} (95 % interval {fmt(best.lds_lo)} to "
                   f"{fmt(best.lds_hi)})"
                   + (f"; its interval overlaps those of {names}, so this run does not separate them"
                      if overlap else ", clear of every other method's interval")
                   + (f". Lowest: **{esc(worst.method)}** with {fmt(worst.lds)} ({fmt(worst.lds_lo)} to "
                      f"{fmt(worst.lds_hi)})." if len(m) > 1 else "."))
    if METAGRAD in set(m.method):
        n_mg = int(m[m.method == METAGRAD].n_test.iloc[0])
        out.append(f"**{METAGRAD}** (exact metagradients through the fine-tuning run) is scored on its {n_mg} "
                   "prompts only; the decomposition below sets every method beside it on those prompts.")
    if M < LDS_MIN_SUBSETS:
        out.append(f"**Too few subsets for the interval to mean anything:** with M = {M}, each prompt's Spearman is "
                   f"taken over {M} points, so the LDS and its bootstrap interval are rough. Use at least "
                   f"{LDS_MIN_SUBSETS} subsets (`analysis.lds_subsets`; the `paper` preset runs 50).")
    return out


def decomposition_sentences(dec: pd.DataFrame) -> list[str]:
    """The LDS decomposition on the prompts that have metagrad (``retrain_decomposition`` rows), in plain words
    (engine.catalog.analyses.decomposition_summary); empty without metagrad."""
    return [] if dec is None or dec.empty else decomposition_summary(dec.to_dict("records"))


def counterfactual_reading(summary: pd.DataFrame) -> list[str]:
    """The counterfactual check: does removing a method's top k move the prompt's loss more than k random ones?
    Read as the top k's rank among R random draws per prompt and a binomial p over the prompts (a method with no
    skill beats all R draws on a prompt with probability 1/(R+1))."""
    if summary.empty:
        return []
    best = summary.iloc[0]
    k, n = int(best.k), int(best.n_prompts)
    out = [f"Counterfactual check on {n} test prompt{'s' if n > 1 else ''}: removing a method's top {k} training "
           f"samples for a prompt and retraining raises that prompt's loss most for **{esc(best.method)}** "
           f"(+{fmt(best.topk_dloss)} against +{fmt(best.random_dloss)} for {k} random samples)."]
    if "binom_p" not in summary or summary.binom_p.isna().all():
        out.append("This run compares with too few random draws for a test (written before the rank and the "
                   "binomial p): a method with no skill beats the best of 2–3 draws on a prompt a quarter to a "
                   "third of the time.")
        return out
    R = int(summary.n_random.min())
    parts = [f"**{esc(r.method)}** above all on {int(r.n_beats)} of {int(r.n_prompts)} (mean rank "
             f"{fmt(r.mean_rank)} of {R + 1}, p = {fmt(r.binom_p, 2)})" for r in summary.itertuples()]
    sig = summary[summary.binom_p < CHANCE_P].method.tolist()
    out.append(f"Ranked among {R} random {k}-sets per prompt (chance of beating them all: 1 in {R + 1}): "
               + "; ".join(parts) + ". "
               + (f"More often than chance (one-sided binomial test, p < {CHANCE_P}): "
                  f"{', '.join(f'**{esc(x)}**' for x in sig)}." if sig else
                  f"No method beats the random draws more often than chance (p < {CHANCE_P})."))
    return out



def unlabelled_reading(board: pd.DataFrame) -> list[str]:
    """The sentences over the leaderboard of a run without labels (``board``: ``ui.labels.method_board``): that
    there is no ground truth; the best LDS where the retraining analysis ran; else that agreement and stability
    are all there is (and agreement is not correctness)."""
    out = ["No ground truth is available: the data has no labels, so Acc@1, Coverage@k and AUPRC need labels."]
    scored = board.dropna(subset=["lds"]) if "lds" in board.columns else board.iloc[0:0]
    if not scored.empty:
        best = scored.iloc[0]
        out.append(f"Ranked by the linear datamodeling score of the retraining analysis (what removing training "
                   f"samples actually does): best **{esc(best.method)}** at LDS {fmt(best.lds, 2)} "
                   f"[{fmt(best.lds_lo, 2)}, {fmt(best.lds_hi, 2)}].")
    else:
        out.append("Without labels and without the retraining analysis (its LDS is a ground truth that needs no "
                   "labels) the methods can only be compared by how much they agree with each other and how stable "
                   "each one's ranking is; agreement is not correctness.")
    return out
