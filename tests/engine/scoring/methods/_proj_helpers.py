"""Slow references of the projected methods: explicit projection matrices, then the unprojected formulas."""

import numpy as np
import torch

from engine.features.projection import projection_matrix
from engine.features.types import Features


def projected_np(features, k, seed, kind="rademacher"):
    """Every block as float64 numpy, projected with its explicit matrix (blocks with d <= k kept as they are)."""
    out = []
    for l, g in enumerate(features.grads):
        G = g.numpy().astype(np.float64)
        d = G.shape[1]
        out.append(G if d <= k else G @ projection_matrix(d, k, seed, l, kind).numpy().astype(np.float64).T)
    return out


def projected_features(features, k, seed, kind="rademacher") -> Features:
    """``features`` with float64 gradients projected by :func:`projected_np`, for the unprojected loops."""
    return Features(grads=[torch.from_numpy(x) for x in projected_np(features, k, seed, kind)])
