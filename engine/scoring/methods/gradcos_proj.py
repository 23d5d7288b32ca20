"""Gradient cosine on seeded random projections of the per-sample gradients (TRAK / LoGra style, for scale).

Formula: cosine of the projected gradients ``P g = (P_1 g_1, ..., P_L g_L)`` over all blocks together:
``s(z_i, z') = <P g(z'), P g(z_i)> / (||P g(z')|| ||P g(z_i)||)``, in [-1, 1]; LESS scores its projected LoRA
gradients the same way. ``P_l`` as in :mod:`engine.features.projection`.
Parameters: ``proj_dim`` (k per block), ``proj_seed``, ``proj_kind`` (rademacher | gaussian | orthogonal).
Shapes: scores [n_test, n_train] float64; larger = more responsible.
"""

from __future__ import annotations

from engine.catalog.methods import Params

from . import gradcos as _gradcos
from ._projected import register_projected

gradcos_proj = register_projected(
    "gradcos_proj",
    "Cosine of the projected gradients -> float64 [n_test, n_train] in [-1, 1]; larger = more responsible.",
    _gradcos.queries, _gradcos.train_side, Params,
)
