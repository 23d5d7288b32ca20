"""LiSSA exactly as the paper's code runs it ("paper-compatible"): 3 steps, scale 1000, MINUS sign on lambda.

Formula, per LoRA block l, with v = g_l(z'), undamped Gauss-Newton HVP and lambda_l as in DataInf:

    lambda_l = mean_i mean_k g_il[k]^2 / lambda_c
    h_0 = v,   h_{t+1} = v + h_t - alpha * ( (1/n) sum_i (g_il^T h_t) g_il  -  lambda_l h_t ) / scale
    s(z_i, z') = sum_l <h_T, g_il>            (T = iterations = 3, scale = 1000, alpha = 1)

Note the two departures from LiSSA (see ``lissa``): the damping enters with a minus sign, and h_T is NOT divided
by scale. With gradients whose HVP term is small next to ``scale`` (the usual case: ||g||^2 << 1000),
h_t ~= (t + 1) v, so h_3 ~= 4 v and the scores are ~= 4 x GradSim: the method reproduces the paper's LiSSA
numbers but is not an inverse-Hessian method.
Shapes: G_l [n, d_l], V_l [m, d_l] -> S [m, n] float64. Sign: larger = more responsible (paper IF = -s).
"""

from __future__ import annotations

import numpy as np
import torch

from engine.errors import InputError
from engine.features.types import Features, TrainData

from ._common import damping, full_score, grad_train_blocks, gram_method
from .base import register


def precondition_lissa_paper(
    G: torch.Tensor,
    V: torch.Tensor,
    *,
    lambda_c: float = 10.0,
    iterations: int = 3,
    scale: float = 1000.0,
    alpha: float = 1.0,
    block: int | None = None,
) -> torch.Tensor:
    """h_T of the paper's recursion for one block: G [n, d], V [m, d] -> Q = h_T [m, d]."""
    if int(iterations) < 0 or not float(scale) > 0:
        raise InputError(f"lissa_paper needs iterations >= 0 and scale > 0, got {iterations!r}, {scale!r}")
    n = G.shape[0]
    lam = damping(G, lambda_c)
    h = V.clone()
    for _t in range(int(iterations)):
        h = V + h - alpha * ((h @ G.T) @ G / n - lam * h) / scale
    return h


queries = gram_method(precondition_lissa_paper)


@register("lissa_paper", queries=queries, train_side=grad_train_blocks, keeps=("gram",))
def lissa_paper(train: Features | TrainData, test: Features, p) -> np.ndarray:
    """Paper-compatible LiSSA scores (see module docstring) -> float64 [n_test, n_train].

    p: :class:`engine.catalog.methods.LissaPaperParams` (lambda_c, iterations, scale, alpha, dtype, device).
    """
    return full_score(queries, grad_train_blocks, train, test, p)
