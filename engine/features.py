"""The features stage: at one checkpoint, compute exactly what the feature plan (:mod:`engine.plan`) asks for.

Training samples are processed shard by shard (``scoring.shard_size``): one gradient pass per shard gives the
per-sample gradients, the prompt representations, the losses and, when planned, the K-FAC factor sums; each
planned projection is applied to the shard right away, and the shard's full gradients are dropped unless the
plan keeps them. Test samples go through the same pass in one piece. RepT signatures take a pass of their own.
The texts (for lexical baselines) need no computation: the pipeline hands them over (:func:`sample_text`).

Outputs are CPU float32 tensors in sample order; see :class:`SideFeatures`. :func:`method_features` then hands
each method the :class:`engine.methods.Features` it reads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from engine.grads import KroneckerFactors, merge_features, sample_features
from engine.plan import FeaturePlan, ProjKey
from engine.projection import ProjectedGrads, Projector, merge_projected
from engine.rep_grads import rept_features


@dataclass
class SideFeatures:
    """Features of one side (train or test) at one checkpoint.

    grads: per LoRA block [n, d_l] when kept, else None; reps: [n, h]; loss: [n] per-sample loss;
    block_names: the LoRA blocks; kfac: factor sums (training side, when planned); projections: key ->
    projected gradients; rept: [n, 2h] when planned.
    """

    grads: list[torch.Tensor] | None
    reps: torch.Tensor
    loss: torch.Tensor
    block_names: tuple[str, ...]
    kfac: KroneckerFactors | None = None
    projections: dict[ProjKey, ProjectedGrads] = field(default_factory=dict)
    rept: torch.Tensor | None = None
    texts: tuple[str, ...] | None = None

    @property
    def n(self) -> int:
        return int(self.loss.shape[0])


@dataclass
class CheckpointFeatures:
    """Both sides' features at checkpoint ``checkpoint``; ``weight`` is its learning-rate weight (TracIn)."""

    checkpoint: int
    weight: float
    train: SideFeatures
    test: SideFeatures


@dataclass(frozen=True)
class PassSettings:
    """How to run the gradient passes: device, batch size, training samples per shard, progress bars."""

    device: torch.device
    pad_id: int
    batch_size: int = 16
    shard_size: int = 512
    progress: bool = True


def sample_text(sample) -> str:
    """The text of a sample that lexical baselines compare: its prompt, a newline, its response."""
    return f"{sample.prompt}\n{sample.response}"


def side_features(model, samples: list, run: PassSettings, plan: FeaturePlan, *, train: bool, keep_grads: bool,
                  desc: str, texts: tuple[str, ...] | None = None) -> SideFeatures:
    """One side's features; the training side in shards of ``run.shard_size`` (test samples in one piece).

    ``keep_grads``: keep the full gradients (else only their projections survive each shard); ``texts``: the
    samples' :func:`sample_text`, kept when the plan reads text.
    """
    if plan.text and (texts is None or len(texts) != len(samples)):
        raise ValueError("the feature plan reads the sample texts: pass one text per sample")
    shard = run.shard_size if train else max(1, len(samples))
    kfac = plan.kfac and train
    parts, projected = [], {k: [] for k in plan.projections}
    projectors: dict[ProjKey, Projector] = {}
    for i in range(0, len(samples), shard):
        f = sample_features(model, samples[i:i + shard], run.pad_id, run.device, run.batch_size,
                            f"{desc} [{i}:{min(i + shard, len(samples))}]" if train else desc, run.progress,
                            kfac=kfac)
        for key in plan.projections:
            if key not in projectors:
                projectors[key] = Projector([g.shape[1] for g in f.grads], *key)
            projected[key].append(projectors[key].project(f.grads))
        # zero-width stand-ins free the shard's full gradients but keep merge_features' block structure
        parts.append(f if keep_grads else dataclasses.replace(f, grads=[torch.empty(g.shape[0], 0) for g in f.grads]))
    merged = merge_features(parts)
    rept = None
    if plan.rept:
        rept = rept_features(model, samples, run.pad_id, run.device, run.batch_size, desc=f"{desc} RepT",
                             progress=run.progress)
    return SideFeatures(grads=merged.grads if keep_grads else None, reps=merged.reps, loss=merged.loss,
                        block_names=merged.block_names, kfac=merged.kfac,
                        projections={k: merge_projected(v) for k, v in projected.items()}, rept=rept,
                        texts=tuple(texts) if plan.text else None)


def checkpoint_features(model, train_enc: list, test_enc: list, run: PassSettings, plan: FeaturePlan,
                        checkpoint: int, weight: float, scored: bool,
                        texts: tuple[list[str], list[str]] | None = None) -> CheckpointFeatures:
    """The plan's features of both sides at one checkpoint (the adapter state is already set, eval mode).

    A checkpoint that is not scored (only TracIn's history reads it) gets full gradients and nothing else.
    ``texts``: (train texts, test texts), :func:`sample_text` of every sample, needed when the plan reads text.
    """
    if not scored:
        plan = FeaturePlan(grads=True)
    keep = plan.keep_train_grads or not scored
    train_texts, test_texts = texts if texts is not None else (None, None)
    train = side_features(model, train_enc, run, plan, train=True, keep_grads=keep,
                          desc=f"train grads @{checkpoint}", texts=train_texts)
    test = side_features(model, test_enc, run, plan, train=False, keep_grads=True,
                         desc=f"test grads @{checkpoint}", texts=test_texts)
    return CheckpointFeatures(checkpoint, weight, train, test)


def method_features(reads_proj: ProjKey | None, now: CheckpointFeatures,
                    history: list[CheckpointFeatures]):
    """``(train, test)`` :class:`engine.methods.Features` for a method at checkpoint ``now``.

    reads_proj: the projection key the method reads (None if it reads none); history: the checkpoints up to and
    including ``now`` whose full gradients were kept (TracIn's sum).
    """
    from engine.methods import Features

    def side(get):
        s: SideFeatures = get(now)
        return Features(
            grads=s.grads, reps=s.reps, block_names=s.block_names, kfac=s.kfac, rept=s.rept,
            proj=s.projections.get(reads_proj) if reads_proj is not None else None,
            history=tuple((c.weight, get(c).grads) for c in history if get(c).grads is not None),
            texts=s.texts, size=s.n)

    return side(lambda c: c.train), side(lambda c: c.test)
