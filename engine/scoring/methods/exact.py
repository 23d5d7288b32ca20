"""Exact per-block inverse-Hessian-vector product (the reference the approximations are judged against).

Formula, per LoRA block l (same damping as DataInf):

    lambda_l = mean_i mean_k g_il[k]^2 / lambda_c
    H_l      = (1/n) sum_i g_il g_il^T + lambda_l I  = G_l^T G_l / n + lambda_l I          [d_l, d_l]
    s(z_i, z') = sum_l <H_l^{-1} g_l(z'), g_il>

Computed exactly, without ever inverting a matrix (:func:`damped_inverse`, also the reference of
``engine.analysis.ihvp_error``, which damps each column with its own lambda):
- n < d_l (Woodbury on the n x n Gram matrix K = G G^T):
  ``H^{-1} v = (1/lambda) [ v - G^T (K + n lambda I)^{-1} G v ]``, solved with a Cholesky factorisation;
- d_l <= n: Cholesky factorisation of the d_l x d_l matrix H itself.
Shapes: G_l [n, d_l], V_l [m, d_l] -> S [m, n] float64. Sign: larger = more responsible (paper IF = -s).
A block whose training gradients are all zero (lambda_l = 0) contributes nothing.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.features.types import Features, TrainData

from ._common import damping, full_score, grad_train_blocks, gram_method
from .base import register


def damped_inverse(G: torch.Tensor, V: torch.Tensor, lam: torch.Tensor | float) -> torch.Tensor:
    """``Q = ((G^T G / n + Lambda)^{-1} V^T)^T`` exactly: G [n, d], V [m, d] -> Q [m, d] (in G's dtype and device).

    ``lam`` > 0 is the damping: a scalar (0-dim tensor or float, ``Lambda = lam I``, one block's lambda_l) or one
    value per column ([d], ``Lambda = diag(lam)``, e.g. each column damped with its own LoRA matrix's lambda_l).

    n < d: Woodbury, ``H^{-1} v = Lambda^{-1} [ v - G^T K^{-1} G Lambda^{-1} v ]`` with the n x n matrix
    ``K = G Lambda^{-1} G^T + n I`` (Cholesky). A scalar lambda is multiplied through, ``(lam K)^{-1} G v``, so
    G is never copied (the scoring hot path). Else a Cholesky factorisation of the d x d matrix H itself.
    """
    n, d = G.shape
    lam = torch.as_tensor(lam, dtype=G.dtype, device=G.device)
    if n < d and lam.ndim == 0:
        K = G @ G.T  # lam K = G G^T + n lam I; the right-hand side is G v (lam times G Lambda^-1 v)
        K.diagonal().add_(n * lam)
        B = torch.cholesky_solve(G @ V.T, torch.linalg.cholesky(K))  # [n, m] = (lam K)^{-1} G v
        return (V - B.T @ G) / lam
    if n < d:
        GD = G / lam  # G Lambda^{-1}
        K = GD @ G.T  # K = G Lambda^{-1} G^T + n I
        K.diagonal().add_(n)
        B = torch.cholesky_solve(GD @ V.T, torch.linalg.cholesky(K))  # [n, m] = K^{-1} G Lambda^{-1} v
        return V / lam - B.T @ GD
    H = G.T @ G / n  # [d, d]
    H.diagonal().add_(lam)
    return torch.cholesky_solve(V.T, torch.linalg.cholesky(H)).T


def precondition_exact(G: torch.Tensor, V: torch.Tensor, *, lambda_c: float = 10.0,
                       block: int | None = None) -> torch.Tensor:
    """``Q = (H^{-1} V^T)^T`` for one block: G [n, d], V [m, d] -> Q [m, d] (``block``: its index, unused)."""
    lam = damping(G, lambda_c)
    if not bool(lam > 0):
        return torch.zeros_like(V)
    return damped_inverse(G, V, lam)


queries = gram_method(precondition_exact)


@register("exact", queries=queries, train_side=grad_train_blocks, keeps=("gram",))
def exact(train: Features | TrainData, test: Features, p) -> np.ndarray:
    """Exact-iHVP scores (see module docstring) -> float64 [n_test, n_train]; larger = more responsible.

    p: :class:`engine.catalog.methods.DampedParams` (lambda_c, dtype, device).
    """
    return full_score(queries, grad_train_blocks, train, test, p)
