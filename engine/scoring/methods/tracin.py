"""TracIn (Pruthi et al. 2020, "TracInCP"): learning-rate weighted gradient dot products over epoch checkpoints.

Formula: ``s(z_i, z') = sum_c eta_c sum_l <g_l^c(z'), g_l^c(z_i)>`` over the checkpoints c in ``Features.history``
(the epochs up to and including the one being scored), ``eta_c`` = mean learning rate of epoch c — a first-order
estimate of how much the training steps on z_i lowered the loss on z'.
Shapes: per checkpoint, train grads ``G_l^c`` [n, d_l] and test grads ``V_l^c`` [m, d_l] -> scores [m, n] float64.
Sign: larger s = training sample more responsible (the paper's IF is -s).
Two-phase form: one query block ``eta_c V_l^c`` and one training block ``G_l^c`` per (checkpoint, block) pair.
The pipeline takes the gradients at every checkpoint up to the scored one (the plan's ``history`` feature), so
TracIn is a sum over checkpoints even when only the last one is scored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from engine.errors import InputError
from engine.features.types import Features, TrainData

from ._common import LazyBlocks, compute, full_score, resolve_device, resolve_dtype
from .base import register


def queries(train: TrainData, test: Features, p) -> list[torch.Tensor]:
    """``[eta_c * V_l^c for each checkpoint c, block l]`` in the compute dtype/device."""
    if not train.history or len(train.history) != len(test.history):
        raise InputError("tracin needs the gradients of every checkpoint up to the scored one (Features.history) "
                         "for train and test; the pipeline provides them")
    dt, dev = compute(train, p)
    return [w * v.to(device=dev, dtype=dt) for (w, _), (_, vs) in zip(train.history, test.history) for v in vs]


def train_side(shard: Features, p) -> Sequence[torch.Tensor]:
    """``[G_l^c for each checkpoint c, block l]`` of the shard, each block converted as it is read
    (:class:`LazyBlocks`: a float64 copy of the whole shard was the stage's largest allocation)."""
    if not shard.history:
        raise InputError("tracin needs Features.history")
    dt, dev = resolve_dtype(p.dtype), resolve_device(p.device, shard.history[0][1][0])
    blocks = [g for _, gs in shard.history for g in gs]
    return LazyBlocks(len(blocks), lambda i: blocks[i].to(device=dev, dtype=dt))


@register("tracin", queries=queries, train_side=train_side)
def tracin(train: Features | TrainData, test: Features, p) -> np.ndarray:
    """TracIn scores -> float64 [n_test, n_train]; larger = more responsible."""
    return full_score(queries, train_side, train, test, p)
