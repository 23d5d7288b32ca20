"""The paper's three analyses, declared once, torch-free: what each reads and how the pages name it.

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
)
ANALYSIS_CATALOG: dict[str, AnalysisInfo] = {a.name: a for a in _ANALYSES}
ANALYSES: tuple[str, ...] = tuple(ANALYSIS_CATALOG)  # the stage names, in the order a run runs them
