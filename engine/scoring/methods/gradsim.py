"""GradSim (the paper's "gradient match"): raw gradient dot product, no Hessian.

Formula: ``s(z_i, z') = sum_l <g_l(z'), g_l(z_i)>``.
Shapes: train grads ``G_l`` [n, d_l], test grads ``V_l`` [m, d_l] -> scores [m, n] (float64 numpy).
Sign: larger s = training sample more responsible (the paper's IF is -s).
Two-phase form: ``Q_l = V_l`` (no preconditioning), ``S = sum_l Q_l @ G_l^T``.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.features.types import Features, TrainData

from ._common import check_grads, compute, full_score, grad_train_blocks
from .base import register


def queries(train: TrainData, test: Features, p) -> list[torch.Tensor]:
    """``Q_l = V_l`` [m, d_l] in the compute dtype/device."""
    check_grads(train, test)
    dt, dev = compute(train, p)
    return [v.to(device=dev, dtype=dt) for v in test.grads]


@register("gradsim", queries=queries, train_side=grad_train_blocks)
def gradsim(train: Features | TrainData, test: Features, p) -> np.ndarray:
    """``S[j, i] = sum_l <V_l[j], G_l[i]>`` -> float64 [n_test, n_train]; larger = more responsible.

    p: :class:`engine.catalog.methods.Params` (dtype "float64" or "float32"; device None = where the training gradients are).
    """
    return full_score(queries, grad_train_blocks, train, test, p)
