"""Shared plumbing of the ``*_proj`` methods: a gradient method run on seeded random projections of the gradients.

A projected method is its unprojected counterpart applied to ``P_l g_l`` instead of ``g_l`` (see
:mod:`engine.projection`): ``gradsim_proj`` scores ``sum_l <P_l g_l(z'), P_l g_l(z_i)>``, which equals GradSim in
expectation; ``gradcos_proj`` and ``datainf_proj`` likewise. The projections come from ``Features.proj`` when it
was computed with the same ``(proj_dim, proj_seed, proj_kind)`` (the pipeline projects every training shard right
after computing it and may drop the full gradients), otherwise they are computed here from ``Features.grads``
(projection is row-wise, so a training shard is projected on its own).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
import torch

from engine.errors import InputError
from engine.projection import DEFAULT_KIND, ProjectedGrads, Projector, check_params

from ._common import dot_queries
from .base import Features, register

PROJ_DEFAULTS = {"proj_dim": 128, "proj_seed": 0, "proj_kind": DEFAULT_KIND}


@lru_cache(maxsize=2)
def _projector(widths: tuple[int, ...], dim: int, seed: int, kind: str) -> Projector:
    return Projector(widths, dim, seed, kind)


def projected(f: Features, proj_dim, proj_seed, proj_kind, start: int = 0, stop: int | None = None) -> ProjectedGrads:
    """Rows ``start:stop`` of ``f``'s gradients, projected with ``(proj_dim, proj_seed, proj_kind)``."""
    check_params(proj_dim, proj_seed, proj_kind)
    if f.proj is not None and f.proj.key == (proj_dim, proj_seed, proj_kind):
        return f.proj if (start, stop) == (0, None) else f.proj.rows(start, stop)
    if not f.grads:
        have = f"projected with {f.proj.key}" if f.proj is not None else "no projection"
        raise InputError(f"this method needs per-sample gradients (Features.grads) or their projection with "
                         f"(proj_dim, proj_seed, proj_kind) = {(proj_dim, proj_seed, proj_kind)} "
                         f"(Features.proj); got {have}")
    proj = _projector(tuple(int(g.shape[1]) for g in f.grads), proj_dim, proj_seed, proj_kind)
    return proj.project([g[start:stop] for g in f.grads])


def view(f: Features, proj_dim, proj_seed, proj_kind, start: int = 0, stop: int | None = None) -> Features:
    """Features whose ``grads`` are the projected blocks (and ``proj`` the projection they came from)."""
    p = projected(f, proj_dim, proj_seed, proj_kind, start, stop)
    return Features(grads=p.blocks, block_names=f.block_names, proj=p)


def projected_method(base_prepare: Callable[..., list[torch.Tensor]],
                     base_train_blocks: Callable[..., list[torch.Tensor]]):
    """``(fn, prepare, train_blocks)`` of a method that runs ``base_*`` on the projected gradients."""

    def prepare(train: Features, test: Features, *, proj_dim, proj_seed, proj_kind, **params):
        return base_prepare(view(train, proj_dim, proj_seed, proj_kind), view(test, proj_dim, proj_seed, proj_kind),
                            **params)

    def train_blocks(train: Features, start: int, stop: int, *, proj_dim, proj_seed, proj_kind, **params):
        shard = view(train, proj_dim, proj_seed, proj_kind, start, stop)
        return base_train_blocks(shard, 0, stop - start, **params)

    def fn(train: Features, test: Features, **params) -> np.ndarray:
        return dot_queries(prepare(train, test, **params), train_blocks(train, 0, train.n, **params))

    return fn, prepare, train_blocks


def register_projected(name: str, description: str, doc: str, base_prepare, base_train_blocks, **defaults):
    """Register ``name``: ``base_*`` (an unprojected method's two phases) on the projected gradients.

    ``defaults`` are the base method's own parameters besides ``dtype``/``device`` (e.g. ``lambda_c``).
    """
    fn, prepare, train_blocks = projected_method(base_prepare, base_train_blocks)
    fn.__name__, fn.__qualname__, fn.__doc__ = name, name, doc
    return register(name, {"proj"}, description, prepare=prepare, train_blocks=train_blocks, **defaults,
                    **PROJ_DEFAULTS, dtype="float64", device=None)(fn)
