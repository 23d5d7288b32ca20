"""GradSim (the paper's "gradient match"): raw gradient dot product, no Hessian.

Formula: ``s(z_i, z') = sum_l <g_l(z'), g_l(z_i)>``.
Shapes: train grads ``G_l`` [n, d_l], test grads ``V_l`` [m, d_l] -> scores [m, n] (float64 numpy).
Sign: larger s = training sample more responsible (the paper's IF is -s).
Two-phase form: ``Q_l = V_l`` (no preconditioning), ``S = sum_l Q_l @ G_l^T``.
"""

from __future__ import annotations

import numpy as np
import torch

from ._common import gradient_method, grad_train_blocks
from .base import Features, register


def _precondition(G: torch.Tensor, V: torch.Tensor, *, block: int | None = None) -> torch.Tensor:
    """``Q_l = V_l`` [m, d_l]."""
    return V


_score, queries = gradient_method(_precondition)


@register("gradsim", queries=queries, train_side=grad_train_blocks)
def gradsim(train: Features, test: Features, p) -> np.ndarray:
    """``S[j, i] = sum_l <V_l[j], G_l[i]>`` -> float64 [n_test, n_train]; larger = more responsible.

    p: :class:`engine.catalog.Params` (dtype "float64" or "float32"; device None = where the training gradients are).
    """
    return _score(train, test, p)
