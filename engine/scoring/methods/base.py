"""The one signature every attribution method has, and the registry of implementations.

A method turns features of the training and test samples into a score matrix ``S`` of shape
``[n_test, n_train]`` where ``S[j, i] = s(z_i, z'_j)`` is LARGER when training sample ``i`` is MORE
responsible for test sample ``j`` (the paper's influence value is ``IF = -s``; we rank by ``s`` descending).

What a method is called, what it reads and which parameters it takes are declared once, torch-free, in
:mod:`engine.catalog.methods`; an implementation here attaches to that entry with :func:`register` and receives its
parameters as the catalog's frozen dataclass ``p`` (never as loose keyword arguments, so nothing is swallowed).

Features (see :class:`Features`):
- ``grads``: per-sample LoRA gradients, one float32 tensor ``[n, d_l]`` per LoRA block ``l`` (the A and B
  matrix of every adapted module are separate blocks, as in the paper and DataInf).
- ``reps``: one representation vector per sample ``[n, h]`` (final-layer hidden state at the last prompt token).

Methods that precondition the test gradient (DataInf, LiSSA, exact iHVP) need statistics over *all* training
samples for that step, but the final step ``S = sum_l Q_l @ G_l^T`` is independent per shard of the training
set; ``engine.scoring.methods.score_in_shards`` uses that so a pipeline can spread the dot products over shards.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields
from typing import Any, Callable

import numpy as np
import torch

from engine.catalog.methods import MethodInfo, method_info
from engine.features.types import Features

# The training-side statistics a method keeps in memory from one method to the next (``Method.keeps``), by
# family: what engine.scoring.methods.release_statistics frees once no method still to come keeps it.
STATISTICS = {
    "gram": "Gram factors of each block's training gradients (TrainData.memo 'gram'; exact, LiSSA, paper LiSSA)",
    "kronecker": "Kronecker eigenbases of the K-FAC factors and EK-FAC's eigenvalue sums (K-FAC, EK-FAC)",
}

Score = Callable[[Any, Features, Any], np.ndarray]
Queries = Callable[[Any, Features, Any], list[torch.Tensor]]  # (TrainData, test Features, p)
TrainSide = Callable[[Features, Any], list[torch.Tensor]]  # (one training shard's Features, p)


@dataclass(frozen=True)
class Method:
    """A registered method: its catalog entry and its implementation.

    score(train, test, p) -> np.ndarray float64 [n_test, n_train], ``p`` the catalog's parameter dataclass,
    ``train`` Features or :class:`~engine.features.types.TrainData`. The two phases that let every method
    stream over training shards (``score_in_shards``): queries(train_data, test, p) -> list[Tensor [m, d_l]]
    (reads statistics of all training shards) and train_side(shard, p) -> list[Tensor [rows, d_l]] with
    ``S[:, shard] = sum_l Q_l @ train_side(shard, p)_l^T``. A method that is not a sum of dot products of
    features (the baselines) streams with blocks(train_data, test, p) -> iterator of ``(start, stop, S[:,
    start:stop])`` over the training data's bounds instead. ``keeps``: the families of :data:`STATISTICS` its
    query phase keeps for the methods after it (another method of the same family reuses them at the same compute
    dtype and device).
    """

    info: MethodInfo
    score: Score
    queries: Queries | None = None
    train_side: TrainSide | None = None
    blocks: Callable | None = None
    keeps: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def needs(self) -> frozenset[str]:
        """The feature kinds this method reads (``engine.catalog.methods``)."""
        return self.info.reads

    @property
    def description(self) -> str:
        return self.info.description

    @property
    def defaults(self) -> dict[str, object]:
        return self.info.defaults

    def make_params(self, **params):
        """The parameter object: defaults updated with ``params``; an unknown name or bad value is an InputError."""
        return self.info.make(params)

    def __call__(self, train, test: Features, **params) -> np.ndarray:
        return self.score(train, test, self.make_params(**params))


@dataclass(frozen=True)
class ScoringMethod:
    """A method of a run with its parameter object (the catalog's frozen dataclass)."""

    name: str
    params: object

    @property
    def proj_key(self):
        """The projection (proj_dim, proj_seed, proj_kind) it reads, or None."""
        if "proj" not in method_info(self.name).reads:
            return None
        p = self.params
        return (p.proj_dim, p.proj_seed, p.proj_kind)


REGISTRY: dict[str, Method] = {}


def register(name: str, *, queries: Queries | None = None, train_side: TrainSide | None = None,
             blocks: Callable | None = None, keeps: tuple[str, ...] = ()):
    """Decorator: implement catalog entry ``name`` with ``score(train, test, p)``.

    ``queries``/``train_side`` give the two-phase form that lets ``score_in_shards`` compute the score matrix
    one training shard at a time, ``blocks`` the block-by-block form of the other methods; ``keeps`` the
    statistics it keeps (:data:`STATISTICS`); see :class:`Method`.
    """
    info = method_info(name)
    unknown = sorted(set(keeps) - set(STATISTICS))
    if unknown:
        raise ValueError(f"method {name!r} keeps unknown statistics {unknown}; known: {sorted(STATISTICS)}")

    def wrap(fn):
        if name in REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        REGISTRY[name] = Method(info, fn, queries, train_side, blocks, frozenset(keeps))
        return fn

    return wrap


def keywords(fn: Callable, p, *, skip: tuple[str, ...] = ("dtype", "device")) -> dict[str, Any]:
    """The fields of parameter object ``p`` that ``fn`` takes as keyword arguments, checked both ways.

    Lets a plain function with explicit keyword parameters (a preconditioner such as
    ``precondition_datainf(G, V, *, lambda_c)``) serve a method whose parameters are a dataclass, without a
    forwarding body and without ``**kwargs``: every field except ``skip`` must be a keyword of ``fn``.
    """
    sig = inspect.signature(fn).parameters
    out = {}
    for f in fields(p):
        if f.name in skip:
            continue
        if f.name not in sig:
            raise TypeError(f"{fn.__qualname__} takes no parameter {f.name!r} of {type(p).__name__}")
        out[f.name] = getattr(p, f.name)
    return out
