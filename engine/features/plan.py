"""The feature plan: which features a run computes, derived from what its methods and analyses declare they read.

Every method declares its feature kinds in :mod:`engine.catalog.methods` and every analysis in
:mod:`engine.catalog.analyses`; the plan is their union. The pipeline computes exactly the plan, stage by stage,
and never looks at a method's name. Feature kinds:

- ``grads``   per-sample LoRA gradients at the scored checkpoint, train and test, kept in full
- ``reps``    final-layer hidden state at the last prompt token (a by-product of the gradient pass)
- ``kfac``    K-FAC factor sums of the training samples (summed during their gradient pass)
- ``proj``    seeded projections of the gradients, one per distinct (proj_dim, proj_seed, proj_kind) key;
              each training shard is projected right after its gradients are taken, and the full gradients
              are dropped shard by shard when nothing else reads them
- ``rept``    RepT signatures (an extra forward/backward pass per side)
- ``history`` gradients at every checkpoint up to the scored one, with learning-rate weights (TracIn). With
              ``scoring.checkpoints: last`` this adds gradient passes at the earlier checkpoints (not scored).
- ``text``    the sample texts (prompt and response) for lexical baselines: no computation, the pipeline hands
              them over

Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from engine.catalog.analyses import ANALYSIS_CATALOG
from engine.catalog.methods import method_info

ProjKey = tuple[int, int, str]  # (proj_dim, proj_seed, proj_kind)


@dataclass(frozen=True)
class FeaturePlan:
    """What to compute at each checkpoint. ``projections``: the distinct projection keys, sorted.
    ``self_influence``: whether the self-influence stage runs (asked for, and some method has a meaningful one:
    ``engine.catalog.methods.MethodInfo.has_self_influence``); it reads the same features as the methods."""

    grads: bool = False
    reps: bool = False
    kfac: bool = False
    projections: tuple[ProjKey, ...] = ()
    rept: bool = False
    history: bool = False
    text: bool = False
    self_influence: bool = False

    @property
    def keep_train_grads(self) -> bool:
        """Whether the full training gradients must be kept after each shard (else only projections stay)."""
        return self.grads or self.kfac or self.history

    def checkpoints(self, scored: Iterable[int]) -> list[int]:
        """The checkpoints whose features are computed, in training order: the scored ones, and with
        ``history`` every checkpoint from 1 up to the last scored one (TracIn sums over them)."""
        scored = sorted(set(scored))
        if self.history and scored:
            return list(range(1, scored[-1] + 1))
        return scored

    def to_dict(self) -> dict[str, Any]:
        """For the manifest."""
        return {"grads": self.grads, "reps": self.reps, "kfac": self.kfac, "rept": self.rept,
                "history": self.history, "text": self.text, "self_influence": self.self_influence,
                "projections": [list(k) for k in self.projections]}


def plan_for(method_params: dict[str, Any], analyses: Iterable[str] = (), self_influence: bool = False
             ) -> FeaturePlan:
    """The union of what the methods (name -> parameter object) and analyses read; ``self_influence``: whether it
    is asked for (the plan runs it only if a method has one)."""
    keys: set = set()
    for name, p in method_params.items():
        keys |= method_info(name).feature_keys(p)
    for a in analyses:
        keys |= ANALYSIS_CATALOG[a].reads
    projections = tuple(sorted(k[1:] for k in keys if isinstance(k, tuple) and k[0] == "proj"))
    return FeaturePlan(grads="grads" in keys, reps="reps" in keys, kfac="kfac" in keys, projections=projections,
                       rept="rept" in keys, history="history" in keys, text="text" in keys,
                       self_influence=self_influence and any(method_info(n).has_self_influence for n in method_params))
