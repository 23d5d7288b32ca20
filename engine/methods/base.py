"""The one signature every attribution method has, and the registry of implementations.

A method turns features of the training and test samples into a score matrix ``S`` of shape
``[n_test, n_train]`` where ``S[j, i] = s(z_i, z'_j)`` is LARGER when training sample ``i`` is MORE
responsible for test sample ``j`` (the paper's influence value is ``IF = -s``; we rank by ``s`` descending).

What a method is called, what it reads and which parameters it takes are declared once, torch-free, in
:mod:`engine.catalog`; an implementation here attaches to that entry with :func:`register` and receives its
parameters as the catalog's frozen dataclass ``p`` (never as loose keyword arguments, so nothing is swallowed).

Features (see :class:`Features`):
- ``grads``: per-sample LoRA gradients, one float32 tensor ``[n, d_l]`` per LoRA block ``l`` (the A and B
  matrix of every adapted module are separate blocks, as in the paper and DataInf).
- ``reps``: one representation vector per sample ``[n, h]`` (final-layer hidden state at the last prompt token).

Methods that precondition the test gradient (DataInf, LiSSA, exact iHVP) need statistics over *all* training
samples for that step, but the final step ``S = sum_l Q_l @ G_l^T`` is independent per shard of the training
set; ``engine.methods.score_in_shards`` uses that so a pipeline can spread the dot products over shards.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from engine.catalog import MethodInfo, method_info

if TYPE_CHECKING:
    from engine.grads import KroneckerFactors
    from engine.projection import ProjectedGrads


@dataclass(frozen=True)
class Features:
    """Per-sample inputs to attribution methods.

    grads: list of ``[n, d_l]`` float32 tensors, one per LoRA block, same order for train and test.
    reps: ``[n, h]`` float32 tensor, or None.
    block_names: names of the LoRA blocks (e.g. ``model.layers.0.self_attn.q_proj.lora_A``).
    history: gradients at the checkpoints up to and including the scored one, ``((weight_c, grads_c), ...)`` in
        training order, with ``weight_c`` the learning-rate weight of checkpoint c; used by TracIn. Empty when
        not computed.
    kfac: the K-FAC factor sums of every block over these samples (``engine.grads.KroneckerFactors``), read
        from the training side by ``kfac``/``ekfac``; None when not computed.
    proj: seeded random projections of ``grads`` (``engine.projection.ProjectedGrads``), read by the ``*_proj``
        methods; None when not computed (those methods then project ``grads`` themselves).
    rept: ``[n, 2h]`` float32 RepT parts (``engine.rep_grads``): hidden state at the last prompt token, then
        d loss / d that hidden state; None when not computed.
    texts: the samples' texts (``engine.tasks.difficulty.sample_text``: prompt, newline, response), read by
        lexical baselines; None when not planned.
    size: the number of samples, set by the pipeline whatever else is computed (a method that reads no feature,
        such as the random baseline, still needs it); None = count from the features.
    """

    grads: list[torch.Tensor] | None = None
    reps: torch.Tensor | None = None
    block_names: tuple[str, ...] = ()
    history: tuple[tuple[float, list[torch.Tensor]], ...] = ()
    kfac: KroneckerFactors | None = None
    proj: ProjectedGrads | None = None
    rept: torch.Tensor | None = None
    texts: tuple[str, ...] | None = None
    size: int | None = None

    @property
    def n(self) -> int:
        if self.size is not None:
            return int(self.size)
        if self.texts is not None:
            return len(self.texts)
        if self.grads:
            return int(self.grads[0].shape[0])
        if self.reps is not None:
            return int(self.reps.shape[0])
        if self.proj is not None:
            return self.proj.n
        if self.rept is not None:
            return int(self.rept.shape[0])
        if self.history:
            return int(self.history[0][1][0].shape[0])
        return 0


Score = Callable[[Any, Features, Any], np.ndarray]
Queries = Callable[[Any, Features, Any], list[torch.Tensor]]  # (TrainData, test Features, p)
TrainSide = Callable[[Features, Any], list[torch.Tensor]]  # (one training shard's Features, p)


@dataclass(frozen=True)
class Method:
    """A registered method: its catalog entry and its implementation.

    score(train, test, p) -> np.ndarray float64 [n_test, n_train], ``p`` the catalog's parameter dataclass,
    ``train`` Features or :class:`~engine.methods.train_data.TrainData`. The two phases that let every method
    stream over training shards (``score_in_shards``): queries(train_data, test, p) -> list[Tensor [m, d_l]]
    (reads statistics of all training shards) and train_side(shard, p) -> list[Tensor [rows, d_l]] with
    ``S[:, shard] = sum_l Q_l @ train_side(shard, p)_l^T``. A method that is not a sum of dot products of
    features (the baselines) streams with blocks(train_data, test, p) -> iterator of ``(start, stop, S[:,
    start:stop])`` over the training data's bounds instead.
    """

    info: MethodInfo
    score: Score
    queries: Queries | None = None
    train_side: TrainSide | None = None
    blocks: Callable | None = None

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def needs(self) -> frozenset[str]:
        """The feature kinds this method reads (``engine.catalog``)."""
        return self.info.reads

    @property
    def description(self) -> str:
        return self.info.description

    @property
    def defaults(self) -> dict[str, object]:
        return self.info.defaults

    @property
    def fn(self) -> Score:
        return self.score

    def make_params(self, **params):
        """The parameter object: defaults updated with ``params``; an unknown name or bad value is an InputError."""
        return self.info.make(params)

    def params(self, **params) -> dict[str, object]:
        """:meth:`make_params` as a plain dict."""
        p = self.make_params(**params)
        return {f.name: getattr(p, f.name) for f in fields(p)}

    def __call__(self, train, test: Features, **params) -> np.ndarray:
        return self.score(train, test, self.make_params(**params))

    def run(self, train, test: Features, p) -> np.ndarray:
        """The score matrix with a parameter object already made (the pipeline's path)."""
        return self.score(train, test, p)

    @property
    def prepare(self) -> Callable[..., list[torch.Tensor]] | None:
        """``prepare(train, test, p=None, **params)``: the query phase (``train``: Features or TrainData)."""
        if self.queries is None:
            return None
        from .train_data import as_train_data

        return lambda train, test, p=None, **params: self.queries(as_train_data(train), test,
                                                                   p or self.make_params(**params))

    @property
    def train_blocks(self) -> Callable[..., list[torch.Tensor]] | None:
        """``train_blocks(train, start, stop, p=None, **params)``: the training side of rows start:stop of
        in-memory Features."""
        if self.train_side is None:
            return None
        from .train_data import slice_features

        return lambda train, start, stop, p=None, **params: self.train_side(
            slice_features(train, start, stop), p or self.make_params(**params))


REGISTRY: dict[str, Method] = {}


def register(name: str, *, queries: Queries | None = None, train_side: TrainSide | None = None,
             blocks: Callable | None = None):
    """Decorator: implement catalog entry ``name`` with ``score(train, test, p)``.

    ``queries``/``train_side`` give the two-phase form that lets ``score_in_shards`` compute the score matrix
    one training shard at a time, ``blocks`` the block-by-block form of the other methods; see :class:`Method`.
    """
    info = method_info(name)

    def wrap(fn):
        if name in REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        REGISTRY[name] = Method(info, fn, queries, train_side, blocks)
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
