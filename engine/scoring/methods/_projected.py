"""Shared plumbing of the ``*_proj`` methods: a gradient method run on seeded random projections of the gradients.

A projected method is its unprojected counterpart applied to ``P_l g_l`` instead of ``g_l`` (see
:mod:`engine.features.projection`): ``gradsim_proj`` scores ``sum_l <P_l g_l(z'), P_l g_l(z_i)>``, which equals GradSim in
expectation; ``gradcos_proj`` and ``datainf_proj`` likewise. The projections come from ``Features.proj`` when it
was computed with the same ``(proj_dim, proj_seed, proj_kind)`` (the pipeline projects every training shard right
after computing it and may drop the full gradients), otherwise they are computed here from ``Features.grads``
(projection is row-wise, so a training shard is projected on its own).
"""

from __future__ import annotations

from dataclasses import fields
from functools import lru_cache
from typing import Callable

import numpy as np
import torch

from engine.errors import InputError
from engine.features.projection import ProjectedGrads, Projector, check_params
from engine.features.types import Features, TrainData

from ._common import full_score
from .base import register


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


def projected_data(train: TrainData, proj_dim, proj_seed, proj_kind) -> TrainData:
    """The training side with the projected gradients as its gradient blocks (made once per key).

    Each shard's projection comes from its ``Features.proj`` when it has this key (the pipeline computed it),
    else it is projected here from the shard's gradients. ``memo["widths"]`` keeps the original widths d_l.
    """
    key = (proj_dim, proj_seed, proj_kind)
    check_params(*key)

    def make(t: TrainData) -> TrainData:
        first = t.loader(0, (), key)
        if first.proj is not None and first.proj.key == key:
            original = first.proj.widths
        elif t.widths:
            original = t.widths
        else:
            raise InputError(f"this method needs per-sample gradients (Features.grads) or their projection with "
                             f"(proj_dim, proj_seed, proj_kind) = {key} (Features.proj); got "
                             f"{'a projection with ' + str(first.proj.key) if first.proj is not None else 'neither'}")

        def loader(i: int, blocks, proj_key=None):
            f = t.loader(i, (), key)
            pg = f.proj if f.proj is not None and f.proj.key == key else projected(t.loader(i, None), *key)
            picked = pg.blocks if blocks is None else [pg.blocks[l] for l in blocks]
            return Features(grads=picked, block_names=f.block_names, proj=pg)

        view = t.with_loader(loader, tuple(min(proj_dim, d) for d in original), kfac=None, history=[])
        view.memo["widths"] = tuple(original)
        return view

    return train.view(("proj", key), make)


def projected_method(base_queries: Callable[..., list[torch.Tensor]],
                     base_train_side: Callable[..., list[torch.Tensor]], base_params: type):
    """``(score, queries, train_side)`` of a method that runs ``base_*`` on the projected gradients.

    The method's parameters are ``base_params``' fields plus proj_dim, proj_seed and proj_kind; the base
    phases receive a ``base_params`` object (the projection fields removed).
    """
    names = [f.name for f in fields(base_params)]

    def base(p):
        return base_params(**{n: getattr(p, n) for n in names})

    def queries(train: TrainData, test: Features, p):
        return base_queries(projected_data(train, p.proj_dim, p.proj_seed, p.proj_kind),
                            view(test, p.proj_dim, p.proj_seed, p.proj_kind), base(p))

    def train_side(shard: Features, p):
        return base_train_side(view(shard, p.proj_dim, p.proj_seed, p.proj_kind), base(p))

    def score(train, test: Features, p) -> np.ndarray:
        return full_score(queries, train_side, train, test, p)

    return score, queries, train_side


def register_projected(name: str, doc: str, base_queries, base_train_side, base_params: type):
    """Register ``name``: ``base_*`` (an unprojected method's two phases) on the projected gradients."""
    score, queries, train_side = projected_method(base_queries, base_train_side, base_params)
    score.__name__, score.__qualname__, score.__doc__ = name, name, doc
    return register(name, queries=queries, train_side=train_side)(score)
