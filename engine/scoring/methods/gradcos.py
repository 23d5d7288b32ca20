"""Gradient cosine: GradSim with every sample's gradient scaled to unit length (over all LoRA blocks together).

Formula: ``s(z_i, z') = sum_l <g_l(z'), g_l(z_i)> / (||g(z')|| ||g(z_i)||)`` with ``||g||^2 = sum_l ||g_l||^2``,
so s is in [-1, 1] and a training sample with a large gradient norm (an outlier, a long or badly fitted sample)
no longer dominates every ranking — a known failure mode of raw GradSim and IF scores.
Shapes: train grads ``G_l`` [n, d_l], test grads ``V_l`` [m, d_l] -> scores [m, n] (float64 numpy).
Sign: larger s = training sample more responsible (the paper's IF is -s).
Two-phase form: ``Q_l = V_l / ||V||`` and ``T_l = G_l / ||G||`` per row, ``S = sum_l Q_l @ T_l^T``. A zero gradient
scores 0 against everything.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from engine.features.types import Features, TrainData

from ._common import LazyBlocks, check_grads, compute, full_score, grad_train_blocks
from .base import register


def _inverse_norms(blocks: Sequence[torch.Tensor]) -> torch.Tensor:
    """1 / sqrt(sum_l ||block_l[r]||^2) per row r (0 for a row of norm 0)."""
    norm = torch.sqrt(sum(torch.einsum("nd,nd->n", b, b) for b in blocks))
    return torch.where(norm > 0, 1.0 / norm.clamp_min(torch.finfo(norm.dtype).tiny), torch.zeros_like(norm))


def queries(train: TrainData, test: Features, p) -> list[torch.Tensor]:
    """``Q_l = V_l / ||V||`` [m, d_l] in the compute dtype/device."""
    check_grads(train, test)
    dt, dev = compute(train, p)
    V = [v.to(device=dev, dtype=dt) for v in test.grads]
    inv = _inverse_norms(V)
    return [v * inv[:, None] for v in V]


def train_side(shard: Features, p) -> Sequence[torch.Tensor]:
    """``T_l = G_l / ||G||`` of the shard (each row's norm over all blocks), each block scaled as it is read."""
    G = grad_train_blocks(shard, p)
    inv = _inverse_norms(G)
    return LazyBlocks(len(G), lambda l: G[l] * inv[:, None])




@register("gradcos", queries=queries, train_side=train_side)
def gradcos(train: Features | TrainData, test: Features, p) -> np.ndarray:
    """Cosine of the full LoRA gradients -> float64 [n_test, n_train] in [-1, 1]; larger = more responsible."""
    return full_score(queries, train_side, train, test, p)
