"""EK-FAC (George et al. 2018; Grosse et al. 2023, Kronfluence's default): eigenvalue-corrected K-FAC iHVP.

Formula, per LoRA block l with weight [out, in], training gradients G_i [out, in] (i = 1..n), K-FAC factors
S_l = (1/n) Σ_i Σ_t dy dyᵀ = Q_S diag(s) Q_Sᵀ and A_l = (1/N_tok) Σ_i Σ_t x xᵀ = Q_A diag(a) Q_Aᵀ (real tokens):

    Λ_l      = (1/n) Σ_i (Q_Sᵀ G_i Q_A)²                 (element-wise square: the Fisher's diagonal in that basis)
    lambda_l = mean_i mean_k g_il[k]^2 / lambda_c  = mean(Λ_l) / lambda_c     (exact's and DataInf's damping)
    h_l      = Q_S [ (Q_Sᵀ V_l Q_A) / (Λ_l + lambda_l) ] Q_Aᵀ      ≈ (G_lᵀ G_l / n + lambda_l I)^{-1} v_l
    s(z_i, z') = Σ_l <h_l, g_il>

It approximates the same damped empirical Fisher as ``exact`` and equals it when that Fisher is diagonal in
the Kronecker eigenbasis; see ``_kronecker.py`` for the derivation and scaling. Needs the training side's K-FAC
factors (``Features.kfac``, collected during the gradient pass). Shapes: G_l [n, d_l], V_l [m, d_l] ->
S [m, n] float64. Sign: larger = more responsible (paper IF = -s). A block whose training gradients are all
zero contributes nothing.
"""

from __future__ import annotations

import numpy as np

from engine.features.types import Features, TrainData

from ._common import full_score, grad_train_blocks
from ._kronecker import kronecker_queries
from .base import register

queries = kronecker_queries(corrected=True, name="ekfac")


@register("ekfac", queries=queries, train_side=grad_train_blocks, keeps=("kronecker",))
def ekfac(train: Features | TrainData, test: Features, p) -> np.ndarray:
    """EK-FAC scores (see module docstring) -> float64 [n_test, n_train]; larger = more responsible.

    p: :class:`engine.catalog.methods.DampedParams` (lambda_c, dtype, device).
    """
    return full_score(queries, grad_train_blocks, train, test, p)
