"""DataInf on seeded random projections of the per-sample gradients (for scale).

DataInf's closed form (:mod:`engine.scoring.methods.datainf`, same preconditioner) applied to the projected blocks
``P_l g_il`` [k_l] instead of ``g_il`` [d_l]. The damping keeps its unprojected value: DataInf's
``lambda_l = mean_i ||g_il||^2 / (d_l lambda_c)`` is estimated as ``mean_i ||P_l g_il||^2 / (d_l lambda_c)``
(``E||P g||^2 = ||g||^2``), i.e. the preconditioner runs with ``lambda_c * d_l / k_l``; without that the damping
of a block would grow by ``d_l / k_l`` and the scores would drift towards GradSim as k shrinks.
Parameters: ``lambda_c``, ``proj_dim`` (k per block), ``proj_seed``, ``proj_kind``.
Shapes: scores [n_test, n_train] float64; larger = more responsible (the paper's IF is -s).
"""

from __future__ import annotations

import torch

from engine.catalog.methods import DampedParams
from engine.features.types import Features, TrainData

from ._common import compute, grad_train_blocks
from ._projected import register_projected
from .datainf import datainf_queries


def _queries(train: TrainData, test: Features, p: DampedParams) -> list[torch.Tensor]:
    """DataInf on the projected blocks (k_l wide), each with the damping of its unprojected width d_l."""
    dt, dev = compute(train, p)
    original = train.memo["widths"]
    return datainf_queries(train, test, dt, dev, lambda l: p.lambda_c * original[l] / train.widths[l])


datainf_proj = register_projected(
    "datainf_proj",
    "DataInf scores of the projected gradients -> float64 [n_test, n_train]; larger = more responsible.",
    _queries, grad_train_blocks, DampedParams,
)
