"""DataInf on seeded random projections of the per-sample gradients (for scale).

DataInf's closed form (:mod:`engine.methods.datainf`, same preconditioner) applied to the projected blocks
``P_l g_il`` [k_l] instead of ``g_il`` [d_l]. The damping keeps its unprojected value: DataInf's
``lambda_l = mean_i ||g_il||^2 / (d_l lambda_c)`` is estimated as ``mean_i ||P_l g_il||^2 / (d_l lambda_c)``
(``E||P g||^2 = ||g||^2``), i.e. the preconditioner runs with ``lambda_c * d_l / k_l``; without that the damping
of a block would grow by ``d_l / k_l`` and the scores would drift towards GradSim as k shrinks.
Parameters: ``lambda_c``, ``proj_dim`` (k per block), ``proj_seed``, ``proj_kind``.
Shapes: scores [n_test, n_train] float64; larger = more responsible (the paper's IF is -s).
"""

from __future__ import annotations

import torch

from engine.catalog import DampedParams

from ._common import grad_train_blocks, prepare_blocks
from ._projected import register_projected
from .base import Features
from .datainf import precondition_datainf


def _precondition(G: torch.Tensor, V: torch.Tensor, *, block: int, widths: tuple[int, ...],
                  lambda_c: float = 10.0) -> torch.Tensor:
    """DataInf on projected block ``block`` of width k_l, with the damping of the unprojected width d_l."""
    return precondition_datainf(G, V, lambda_c=lambda_c * widths[block] / G.shape[1])


def _queries(train: Features, test: Features, p: DampedParams) -> list[torch.Tensor]:
    return prepare_blocks(train, test, _precondition, widths=train.proj.widths, lambda_c=p.lambda_c,
                          dtype=p.dtype, device=p.device)


datainf_proj = register_projected(
    "datainf_proj",
    "DataInf scores of the projected gradients -> float64 [n_test, n_train]; larger = more responsible.",
    _queries, grad_train_blocks, DampedParams,
)
