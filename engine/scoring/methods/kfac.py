"""K-FAC (Martens & Grosse 2015): Kronecker-factored iHVP per LoRA block.

Formula, per LoRA block l with weight [out, in] and K-FAC factors over the training samples' real tokens,
S_l = (1/n) Σ_i Σ_t dy dyᵀ = Q_S diag(s) Q_Sᵀ  and  A_l = (1/N_tok) Σ_i Σ_t x xᵀ = Q_A diag(a) Q_Aᵀ:

    lambda_l = mean_i mean_k g_il[k]^2 / lambda_c                              (exact's and DataInf's damping)
    h_l      = (S_l ⊗ A_l + lambda_l I)^{-1} v_l = Q_S [ (Q_Sᵀ V_l Q_A) / (s aᵀ + lambda_l) ] Q_Aᵀ
    s(z_i, z') = Σ_l <h_l, g_il>

S_l ⊗ A_l approximates the empirical Fisher G_lᵀ G_l / n that ``exact`` uses (see ``_kronecker.py``); ``ekfac``
refits its eigenvalues. Needs the training side's K-FAC factors (``Features.kfac``). Shapes: G_l [n, d_l],
V_l [m, d_l] -> S [m, n] float64. Sign: larger = more responsible (paper IF = -s). A block whose training
gradients are all zero contributes nothing.
"""

from __future__ import annotations

import numpy as np

from engine.features.types import Features, TrainData

from ._common import full_score, grad_train_blocks
from ._kronecker import kronecker_queries
from .base import register

queries = kronecker_queries(corrected=False, name="kfac")


@register("kfac", queries=queries, train_side=grad_train_blocks, keeps=("kronecker",))
def kfac(train: Features | TrainData, test: Features, p) -> np.ndarray:
    """K-FAC scores (see module docstring) -> float64 [n_test, n_train]; larger = more responsible.

    p: :class:`engine.catalog.methods.DampedParams` (lambda_c, dtype, device).
    """
    return full_score(queries, grad_train_blocks, train, test, p)
