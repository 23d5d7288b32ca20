"""GradSim on seeded random projections of the per-sample gradients (TRAK / LoGra style, for scale).

Formula: ``s(z_i, z') = sum_l <P_l g_l(z'), P_l g_l(z_i)>`` with ``P_l`` [min(k, d_l), d_l] the seeded projection
of block l (:mod:`engine.features.projection`; ``E[P_l^T P_l] = I``, so the expectation is GradSim's score).
Parameters: ``proj_dim`` (k per block), ``proj_seed``, ``proj_kind`` (rademacher | gaussian | orthogonal).
Shapes: scores [n_test, n_train] float64; larger = more responsible (the paper's IF is -s).
Memory per training sample: ``4 * sum_l min(k, d_l)`` bytes instead of ``4 * sum_l d_l``.
"""

from __future__ import annotations

from engine.catalog.methods import Params

from . import gradsim as _gradsim
from ._common import grad_train_blocks
from ._projected import register_projected

gradsim_proj = register_projected(
    "gradsim_proj",
    "``S[j, i] = sum_l <P_l V_l[j], P_l G_l[i]>`` -> float64 [n_test, n_train]; larger = more responsible.",
    _gradsim.queries, grad_train_blocks, Params,
)
