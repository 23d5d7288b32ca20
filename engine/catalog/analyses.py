"""The analyses (the paper's three and the stability check), declared once, torch-free: what each reads and how
the pages name it.

The spec's ``analysis.stages`` takes these names (:data:`ANALYSES`, in run order), the feature plan adds what
each reads (:attr:`AnalysisInfo.reads`), and the app says how to get one a run lacks (:attr:`AnalysisInfo.how_to`).
The tables each one writes are declared with the run-folder format (``engine.runfolder.runformat``: a table's
``by``). The code that runs them: ``engine.analysis``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AnalysisInfo:
    """One analysis stage.

    name: the stage name in specs and on the command line. reads: the feature kinds (``engine.features.plan``) it
    reads at the last scored checkpoint. every_checkpoint: it compares checkpoints, so the run must score them
    all (``scoring.checkpoints: all``). retrains: it fine-tunes the adapter again (so a user's adapter needs its
    recipe). how_to: what the pages call it when a run lacks it.
    """

    name: str
    reads: frozenset[str]
    how_to: str
    every_checkpoint: bool = False
    retrains: bool = False


_ANALYSES = (
    AnalysisInfo("ihvp", frozenset({"grads", "kfac"}), "the iHVP-error study"),
    AnalysisInfo("convergence", frozenset(), "the convergence analysis (it needs `scoring.checkpoints: all`)",
                 every_checkpoint=True),
    AnalysisInfo("retrain", frozenset(), "the retraining analysis (it re-fine-tunes the model once per retraining: "
                 "reshuffles, removals, LDS subsets, top-k sets; the slow one)", retrains=True),
    AnalysisInfo("stability", frozenset(), "the stability check (on by default; `analysis.stages` without "
                 "`stability` turns it off)"),
)
# the stability analysis' perturbations, in table order: name -> (the setting that changes, as the pages say "this
# ranking changes when <it> changes", and whether the change SHOULD move a ranking: only the reference does)
STABILITY_PERTURBATIONS: dict[str, tuple[str, bool]] = {
    "proj_seed": ("the projection seed", False),
    "damping_x0.1": ("the damping (λ × 0.1)", False),
    "damping_x10": ("the damping (λ × 10)", False),
    "checkpoint": ("the checkpoint (the last vs the one before)", False),
    "precision": ("the precision (bfloat16 vs float32 model compute)", False),
    "attention": ("the attention kernel (eager vs SDPA)", False),
    "loss_positions": ("the loss positions (whole sequence vs response only; a change that should matter)", True),
}
STABILITY_WARN = 0.9  # a method whose stability (mean top-k overlap) is below this gets a warning on the pages


def stability_warning(method: str, stability: float, moving: list[tuple[str, float]]) -> str:
    """The warning on a method whose stability is under :data:`STABILITY_WARN` (``moving``: the perturbations
    under it with their top-k overlap, worst first; ``method`` as the caller shows it, escaped where it must be)."""
    causes = " and when ".join(f"{STABILITY_PERTURBATIONS[p][0]} changes (top-k overlap {o:.2f})" for p, o in moving)
    return f"{method} (stability {stability:.2f} < {STABILITY_WARN:g}): this ranking changes when {causes}."

# The retraining analysis' exact answer (engine.model.replay): not a method of the catalog (it needs the run's
# fine-tuning replayed, and covers only ``analysis.metagrad_prompts`` prompts), but its rows in the retraining
# tables carry this method name beside every method's.
METAGRAD = "metagrad"
METAGRAD_DESCRIPTION = ("exact metagradients: -d L(test) / d (a training sample's loss weight), through the "
                        "fine-tuning run itself (AdamW, schedule, clipping, dropout masks, data order)")
# The LDS decomposition on the prompts that have metagrad: method -> what its score assumes, in table order
DECOMPOSITION_PARTS: dict[str, str] = {
    "exact": "converged model, exact curvature (explicit inverse)",
    "datainf": "converged model + DataInf's curvature approximation",
    "ekfac": "converged model + EK-FAC's curvature approximation",
    "kfac": "converged model + K-FAC's curvature approximation",
    "lissa": "converged model + LiSSA's iterative inverse",
    "lissa_paper": "converged model + the paper's 3 LiSSA steps",
    "tracin": "the training trajectory, no curvature",
    METAGRAD: "the training trajectory, exact (the best achievable here)",
}


def decomposition_reading(lds: dict[str, float], signal: float | None = None,
                          noise_floor: float | None = None) -> list[str]:
    """Plain sentences from the decomposition's LDS values (method -> LDS on the metagrad prompts): of the gap
    between DataInf and metagrad, how much the curvature approximation costs (exact - DataInf) and how much the
    converged-model assumption (metagrad - exact); what metagrad itself leaves; whether the subsets' effect is
    above the noise. Empty without metagrad."""
    mg = lds.get(METAGRAD)
    if mg is None:
        return []
    out = []
    di, ex = lds.get("datainf"), lds.get("exact")
    if di is not None and ex is not None:
        gap, curv, conv = mg - di, ex - di, mg - ex
        if gap <= 0:
            out.append(f"DataInf (LDS {di:.2f}) is not below metagrad ({mg:.2f}) on these prompts: there is no gap "
                       f"to split (exact inverse {ex:.2f}).")
        elif curv >= 0 and conv >= 0:
            out.append(f"Of the gap between DataInf (LDS {di:.2f}) and the best achievable here (metagrad, {mg:.2f}), "
                       f"{curv:.2f} ({curv / gap:.0%}) comes from the curvature approximation (the exact inverse "
                       f"reaches {ex:.2f}) and {conv:.2f} ({conv / gap:.0%}) from assuming the model converged.")
        elif curv < 0:
            out.append(f"Of the gap between DataInf (LDS {di:.2f}) and the best achievable here (metagrad, {mg:.2f}), "
                       f"none comes from the curvature approximation: the exact inverse scores lower ({ex:.2f}), so "
                       f"DataInf's approximation helps here by {-curv:.2f}. Assuming the model converged costs the "
                       f"whole gap and more: metagrad is {conv:.2f} above the exact inverse.")
        else:
            out.append(f"Of the gap between DataInf (LDS {di:.2f}) and metagrad ({mg:.2f}), the curvature "
                       f"approximation accounts for all of it and more: the exact inverse ({ex:.2f}) is above "
                       f"metagrad, so on these prompts the converged-model assumption costs nothing measurable.")
    tr = lds.get("tracin")
    if tr is not None:
        out.append(f"TracIn, the same trajectory without curvature or the optimizer's own steps, reaches {tr:.2f}.")
    out.append(f"metagrad itself leaves {1 - mg:.2f} of a perfect LDS: what its first-order view of each sample's "
               "weight misses when half the training set is removed at once (removal is not an infinitesimal "
               "reweighting) and what the retrainings' own noise hides.")
    if signal is not None and noise_floor is not None:
        above = signal > noise_floor
        out.append(f"The LDS subsets move these prompts' losses by {signal:.3g} on average, "
                   f"{'above' if above else 'inside'} their noise floor ({noise_floor:.3g}: a reshuffle of the same "
                   f"data){'' if above else ', so every LDS here is close to a coin toss'}.")
    return out


def decomposition_summary(rows: list[dict]) -> list[str]:
    """:func:`decomposition_reading` from ``retrain_decomposition`` rows (dicts; NaN/None LDS values are left out),
    headed by how many prompts and subsets it stands on: one paragraph, or nothing without rows."""
    def num(x):
        return None if x is None or x != x else float(x)

    if not rows:
        return []
    values = {r["method"]: num(r["lds"]) for r in rows if num(r["lds"]) is not None}
    first = rows[0]
    body = decomposition_reading(values, num(first["signal"]), num(first["noise_floor"]))
    head = (f"On the {int(first['n_prompts'])} test prompts with exact metagradients ({METAGRAD}) and the same "
            f"{int(first['n_subsets'])} LDS subsets:")
    return [head + " " + " ".join(body)] if body else []


ANALYSIS_CATALOG: dict[str, AnalysisInfo] = {a.name: a for a in _ANALYSES}
ANALYSES: tuple[str, ...] = tuple(ANALYSIS_CATALOG)  # the stage names, in the order a run runs them
