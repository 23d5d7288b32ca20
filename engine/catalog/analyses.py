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
ANALYSIS_CATALOG: dict[str, AnalysisInfo] = {a.name: a for a in _ANALYSES}
ANALYSES: tuple[str, ...] = tuple(ANALYSIS_CATALOG)  # the stage names, in the order a run runs them
