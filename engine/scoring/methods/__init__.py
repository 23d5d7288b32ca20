"""Attribution methods: the implementations, name lookup, and shard-wise scoring.

Importing this package registers every built-in method (one module each) in :data:`REGISTRY`; what each method
is called, reads and takes as parameters is declared in :mod:`engine.catalog.methods` (torch-free).

Score convention (all methods): ``S[j, i] = s(z_i, z'_j)``, float64 ``[n_test, n_train]``, LARGER when training
sample ``i`` is MORE responsible for test sample ``j``; the paper's influence value is ``IF = -s``.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from engine.catalog.methods import CATALOG
from engine.errors import InputError
from engine.features.types import Features, TrainData, as_train_data

# imported for the registration side effect
from . import (  # noqa: F401  (every method module registers itself; random_scores and bm25 are the baselines)
    bm25,
    datainf,
    datainf_proj,
    ekfac,
    exact,
    gradcos,
    gradcos_proj,
    gradsim,
    gradsim_proj,
    kfac,
    lissa,
    lissa_paper,
    random_scores,
    repsim,
    rept,
    tracin,
)
from ._common import dot_queries
from ._kronecker import forget_eigenbases
from .base import REGISTRY, Method, register

__all__ = ["REGISTRY", "Method", "register", "get_method", "score_in_shards"]

_missing = sorted(set(CATALOG) - set(REGISTRY))
assert not _missing, f"catalog methods without an implementation: {_missing}"


def get_method(name: str) -> Method:
    """The registered method called ``name``; an unknown name is an InputError listing the valid ones."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown method {name!r}; valid methods: {', '.join(sorted(REGISTRY))}") from None


def score_in_shards(
    method_name: str, train: Features | TrainData, test: Features, shard_size: int | None = None, p=None, **params
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, stop, S[:, start:stop])`` for the training shards, in order.

    ``train``: in-memory Features (cut into shards of ``shard_size`` rows) or a TrainData (its own shards, e.g.
    from the feature cache or one rank's share; ``shard_size`` is then ignored). ``p``: the method's parameter
    object (``engine.catalog.methods``); without it one is made from ``params``. The queries ``Q_l = queries(train, test,
    p)`` are built once (the statistics passes read every shard), then each shard costs only
    ``S[:, shard] = sum_l Q_l @ T_l^T`` with ``T = train_side(shard, p)``. Concatenating the blocks along axis 1
    gives ``get_method(method_name)(train, test, **params)`` up to floating-point summation order. Blocks are
    float64 numpy arrays ``[n_test, stop - start]``.
    """
    method = get_method(method_name)
    if p is not None and params:
        raise TypeError("score_in_shards takes a parameter object p or keyword parameters, not both")
    p = method.make_params(**params) if p is None else p
    if not isinstance(train, TrainData) and (
            isinstance(shard_size, bool) or not isinstance(shard_size, (int, np.integer)) or shard_size < 1):
        raise InputError(f"shard_size must be a positive integer, got {shard_size!r}")
    data = as_train_data(train, shard_size)
    if method.blocks is not None:  # not a sum of per-sample dot products (the baselines): their own blocks
        for start, stop, S in method.blocks(data, test, p):
            yield start, stop, np.asarray(S, dtype=np.float64)
        return
    if method.queries is None:  # no streaming form: the whole matrix at once
        S = np.asarray(method.score(data, test, p), dtype=np.float64)  # [n_test, n]: columns are global ids
        for start, stop in data.bounds:
            yield start, stop, S[:, start:stop]
        return
    Q = method.queries(data, test, p)
    for start, stop, shard in data.shards():
        yield start, stop, dot_queries(Q, method.train_side(shard, p))


# TrainData.memo key names (their first element) by statistics family (engine.scoring.methods.base.STATISTICS)
_MEMO_FAMILY = {"gram": "gram", "ekfac_sums": "kronecker"}


def release_statistics(train: TrainData, unless_kept_by: Iterable[Method] | None = None) -> None:
    """Forget the training-side statistics the methods kept while scoring ``train``. A method asked again
    recomputes them (a pass over the shards).

    ``unless_kept_by=None``: all of them (its ``memo``: damping sums, Gram factors; the Kronecker eigenbases of
    its K-FAC factors); the pipeline does so once nothing after the checks reads them (no query index).
    ``unless_kept_by=methods``: only the large families (:data:`~engine.scoring.methods.base.STATISTICS`) that
    none of ``methods`` keeps: the pipeline calls it before each method with the methods still to come (and with
    none after the last), so the Gram factors of exact and LiSSA (256 MB on SmolLM2 at 1k samples) do not sit
    through K-FAC, EK-FAC and the rest, when no later stage reads them. Derived training sides (``train.views``,
    the projections) lose their large families only, never the rest of their memo (a projection's "widths")."""
    unless_kept_by = None if unless_kept_by is None else list(unless_kept_by)  # read more than once below
    for view in train.views.values():  # derived training sides (projections): their large statistics only (their
        release_statistics(view, unless_kept_by or [])  # memo also holds what defines them, e.g. "widths")
    if unless_kept_by is None:
        train.memo.clear()
        if train.kfac is not None:
            forget_eigenbases(train.kfac)
        return
    wanted = set().union(*(m.keeps for m in unless_kept_by))
    for key in [k for k in train.memo if _MEMO_FAMILY.get(k[0] if isinstance(k, tuple) else k) not in (None, *wanted)]:
        del train.memo[key]
    if "kronecker" not in wanted and train.kfac is not None:
        forget_eigenbases(train.kfac)
