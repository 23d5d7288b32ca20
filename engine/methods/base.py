"""The one signature every attribution method has, and the registry that maps names to methods.

A method turns features of the training and test samples into a score matrix ``S`` of shape
``[n_test, n_train]`` where ``S[j, i] = s(z_i, z'_j)`` is LARGER when training sample ``i`` is MORE
responsible for test sample ``j`` (the paper's influence value is ``IF = -s``; we rank by ``s`` descending).

Features (see :class:`Features`):
- ``grads``: per-sample LoRA gradients, one float32 tensor ``[n, d_l]`` per LoRA block ``l`` (the A and B
  matrix of every adapted module are separate blocks, as in the paper and DataInf).
- ``reps``: one representation vector per sample ``[n, h]`` (final-layer hidden state at the last prompt token).

Methods that precondition the test gradient (DataInf, LiSSA, exact iHVP) need statistics over *all* training
samples for that step, but the final step ``S = sum_l Q_l @ G_l^T`` is independent per shard of the training
set; :func:`score_in_shards` uses that so a pipeline can spread the dot products over shards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np
import torch

from engine.errors import InputError

if TYPE_CHECKING:
    from engine.grads import KroneckerFactors
    from engine.projection import ProjectedGrads


@dataclass(frozen=True)
class Features:
    """Per-sample inputs to attribution methods.

    grads: list of ``[n, d_l]`` float32 tensors, one per LoRA block, same order for train and test.
    reps: ``[n, h]`` float32 tensor, or None.
    block_names: names of the LoRA blocks (e.g. ``model.layers.0.self_attn.q_proj.lora_A``).
    history: gradients at the epoch checkpoints so far, ``((weight_c, grads_c), ...)`` in epoch order, with
        ``weight_c`` the mean learning rate of epoch c; used by TracIn. Empty when not computed.
    kfac: the K-FAC factor sums of every block over these samples (``engine.grads.KroneckerFactors``), read
        from the training side by ``kfac``/``ekfac``; None when not computed.
    proj: seeded random projections of ``grads`` (``engine.projection.ProjectedGrads``), read by the ``*_proj``
        methods; None when not computed (those methods then project ``grads`` themselves).
    rept: ``[n, 2h]`` float32 RepT parts (``engine.rep_grads``): hidden state at the last prompt token, then
        d loss / d that hidden state; None when not computed.
    """

    grads: list[torch.Tensor] | None = None
    reps: torch.Tensor | None = None
    block_names: tuple[str, ...] = ()
    history: tuple[tuple[float, list[torch.Tensor]], ...] = ()
    kfac: KroneckerFactors | None = None
    proj: ProjectedGrads | None = None
    rept: torch.Tensor | None = None

    @property
    def n(self) -> int:
        if self.grads:
            return int(self.grads[0].shape[0])
        if self.reps is not None:
            return int(self.reps.shape[0])
        if self.proj is not None:
            return self.proj.n
        if self.rept is not None:
            return int(self.rept.shape[0])
        return 0


@dataclass(frozen=True)
class Method:
    """A registered method.

    fn(train, test, **params) -> np.ndarray float64 [n_test, n_train]
    needs: which Features fields it reads ("grads", "reps", "kfac").
    defaults: default keyword parameters (the spec may override them).
    """

    name: str
    fn: Callable[..., np.ndarray]
    needs: frozenset[str]
    description: str
    defaults: Mapping[str, object] = field(default_factory=dict)
    # Optional two-phase form used by ``score_in_shards`` (see engine/methods/__init__.py):
    # prepare(train, test, **params) -> list[Tensor [m, d_l]]  (query vectors Q_l, may use all of train)
    # train_blocks(train, start, stop, **params) -> list[Tensor [stop - start, d_l]]  (same dtype/device as Q_l)
    # with fn(train, test, **params) == sum_l Q_l @ train_blocks(train, 0, n)_l^T.
    prepare: Callable[..., list[torch.Tensor]] | None = None
    train_blocks: Callable[..., list[torch.Tensor]] | None = None

    def params(self, **params) -> dict[str, object]:
        """The defaults updated with ``params``; a name that is not a parameter of this method is an InputError."""
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise InputError(
                f"method {self.name!r} has no parameter(s) {unknown}; its parameters are {sorted(self.defaults)}"
            )
        return {**self.defaults, **params}

    def __call__(self, train: Features, test: Features, **params) -> np.ndarray:
        merged = self.params(**params)
        return self.fn(train, test, **merged)


REGISTRY: dict[str, Method] = {}


def register(
    name: str,
    needs: set[str],
    description: str,
    *,
    prepare: Callable[..., list[torch.Tensor]] | None = None,
    train_blocks: Callable[..., list[torch.Tensor]] | None = None,
    **defaults,
):
    """Decorator: add ``fn`` to the registry under ``name``.

    ``defaults`` must name every keyword parameter of ``fn``: calling a method with any other parameter is an
    InputError (see :meth:`Method.params`). ``prepare``/``train_blocks`` (keyword-only, optional) give the two-phase form that lets
    ``score_in_shards`` compute the score matrix one training shard at a time; see :class:`Method`.
    """

    def wrap(fn):
        if name in REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        REGISTRY[name] = Method(
            name, fn, frozenset(needs), description, dict(defaults), prepare=prepare, train_blocks=train_blocks
        )
        return fn

    return wrap
