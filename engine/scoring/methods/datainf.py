"""DataInf (Kwon et al., ICLR 2024): closed-form approximation of the per-block inverse-Hessian-vector product.

Formula, per LoRA block l with training gradients g_il (i = 1..n) and test gradient v_l = g_l(z'):

    lambda_l = mean_i mean_k g_il[k]^2 / lambda_c                         (lambda_c = 10, paper and DataInf)
    h_l      = 1/(n lambda_l) * sum_i [ v_l - (g_il^T v_l) / (lambda_l + ||g_il||^2) * g_il ]
    s(z_i, z') = sum_l <h_l, g_il>

(``h_l`` approximates ``(1/n sum_i g_il g_il^T + lambda_l I)^{-1} v_l`` by swapping the inverse and the mean.)

Vectorised per block with two matmuls: ``C = V G^T`` [m, n], ``r_i = ||g_i||^2``,
``Q = (V - (C / (lambda + r)) @ G / n) / lambda`` [m, d]; then ``S = sum_l Q_l G_l^T``.
Shapes: G_l [n, d_l], V_l [m, d_l] -> S [m, n] float64. Sign: larger = more responsible (paper IF = -s).
A block whose training gradients are all zero (lambda_l = 0) contributes nothing.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.features.types import Features, TrainData

from ._common import block_damping, block_sums, check_grads, compute, damping, full_score, grad_train_blocks, sq_norms
from .base import register


def precondition_datainf(G: torch.Tensor, V: torch.Tensor, *, lambda_c: float = 10.0,
                         block: int | None = None) -> torch.Tensor:
    """DataInf query vectors of one block: G [n, d], V [m, d] -> Q [m, d] (``Q[j] = h_l`` for test j).

    ``block``: the block's index (every preconditioner takes it; unused here)."""
    n = G.shape[0]
    r = sq_norms(G)  # [n]  ||g_i||^2
    lam = damping(G, lambda_c, r)
    if not bool(lam > 0):
        return torch.zeros_like(V)
    C = V @ G.T  # [m, n]  g_i^T v
    W = C / (lam + r)  # [m, n]
    return (V - (W @ G) / n) / lam


def datainf_queries(train: TrainData, test: Features, dt, dev, lambda_c_of) -> list[torch.Tensor]:
    """DataInf's query vectors from the training shards, two passes per block: the damping (sum of squared
    norms), then ``W = sum_i (g_i^T v) / (lambda + ||g_i||^2) g_i`` [m, d]; ``Q = (V - W / n) / lambda``.
    ``lambda_c_of(l)``: the block's lambda_c. The same numbers as :func:`precondition_datainf` on all of G."""
    check_grads(train, test)
    out = []
    for l, v in enumerate(test.grads):
        V = v.to(device=dev, dtype=dt)
        lam = block_damping(train, l, dt, dev, lambda_c_of(l))
        if not bool(lam > 0):
            out.append(torch.zeros_like(V))
            continue
        W = block_sums(train, l, dt, dev, lambda G: ((V @ G.T) / (lam + sq_norms(G))) @ G)
        out.append((V - W / train.n) / lam)
    return out


def queries(train: TrainData, test: Features, p) -> list[torch.Tensor]:
    dt, dev = compute(train, p)
    return datainf_queries(train, test, dt, dev, lambda l: p.lambda_c)


@register("datainf", queries=queries, train_side=grad_train_blocks)
def datainf(train: Features | TrainData, test: Features, p) -> np.ndarray:
    """DataInf scores (see module docstring) -> float64 [n_test, n_train]; larger = more responsible.

    p: :class:`engine.catalog.methods.DampedParams` (lambda_c, dtype, device).
    """
    return full_score(queries, grad_train_blocks, train, test, p)
