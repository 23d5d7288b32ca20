"""Shared plumbing of the gradient methods: input checks, dtype/device handling, damping, Gram factors, phases.

Every gradient method here is "precondition the test gradient, then dot with the training gradients":

    Q_l = P_l(G_l, V_l)            [m, d_l]   (P_l may use statistics of all n training gradients of block l)
    S   = sum_l Q_l @ G_l^T        [m, n]     S[j, i] = s(z_i, z'_j), larger = more responsible

where ``G_l`` [n, d_l] are the training and ``V_l`` [m, d_l] the test gradients of LoRA block ``l``. The training
side arrives as :class:`~engine.features.types.TrainData` (shard by shard, never all at once): the query
phase reads it block by block for the statistics it needs, the scoring phase (:func:`grad_train_blocks`) shard
by shard. Preconditioners that depend on G only through ``G^T G / n`` (exact, LiSSA, paper LiSSA) receive a
Gram factor C_l with ``C^T C / rows(C) = G^T G / n`` (:func:`gram_factor`): G itself when n < d_l, else a
[d_l, d_l] factor accumulated over the shards — the same numbers, with memory bounded by min(n, d_l) x d_l.
A method's parameters arrive as its catalog dataclass ``p`` (:mod:`engine.catalog.methods`).

Computation happens in ``dtype`` (default float64) on ``device`` (default: where the training features live, so
CUDA inputs are computed on the GPU); only the final score matrix is moved to the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Callable

import numpy as np
import torch

from engine.errors import InputError
from engine.features.types import Features, TrainData, as_train_data

from .base import keywords

_DTYPES = {"float64": torch.float64, "float32": torch.float32}

Preconditioner = Callable[..., torch.Tensor]


def resolve_dtype(dtype) -> torch.dtype:
    """``"float64"`` / ``"float32"`` (or the torch dtype itself) -> torch dtype."""
    if isinstance(dtype, torch.dtype):
        if dtype in _DTYPES.values():
            return dtype
    elif isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise InputError(f"method parameter 'dtype' must be one of {sorted(_DTYPES)}, got {dtype!r}")


def resolve_device(device, reference) -> torch.device:
    """``None`` -> the device of ``reference`` (a tensor, or TrainData's device); otherwise ``torch.device(device)``."""
    if device is not None:
        return torch.device(device)
    return reference.device


def check_grads(train: TrainData, test: Features) -> None:
    """Both sides have gradients with the same blocks (count and width); raise InputError otherwise."""
    if not train.widths:
        raise InputError("this method needs per-sample gradients of the training samples (Features.grads)")
    if not test.grads:
        raise InputError("this method needs per-sample gradients of the test samples (Features.grads)")
    if len(train.widths) != len(test.grads):
        raise InputError(
            f"train has {len(train.widths)} gradient blocks but test has {len(test.grads)}; they must match"
        )
    for l, (d, v) in enumerate(zip(train.widths, test.grads)):
        if v.ndim != 2 or v.shape[1] != d:
            name = train.block_names[l] if l < len(train.block_names) else f"#{l}"
            raise InputError(
                f"gradient block {name}: train shape [n, {d}] and test shape {tuple(v.shape)} "
                "must both be [n, d] with the same d"
            )


def sq_norms(G: torch.Tensor) -> torch.Tensor:
    """``||g_i||^2`` per row of G [n, d] -> [n]."""
    return torch.linalg.vector_norm(G, dim=1).square()


def damping(G: torch.Tensor, lambda_c: float, norms: torch.Tensor | None = None) -> torch.Tensor:
    """DataInf's layer-wise damping ``lambda_l = mean_i mean_k G[i, k]^2 / lambda_c`` (0-dim tensor).

    Shared by ``datainf``, ``exact``, ``lissa`` and ``lissa_paper`` so they precondition the same ``H_l``.
    ``norms``: the row norms ``||g_i||^2`` if already computed.
    """
    if not lambda_c > 0:
        raise InputError(f"method parameter 'lambda_c' must be > 0, got {lambda_c!r}")
    if norms is None:
        norms = sq_norms(G)
    return norms.sum() / (G.shape[0] * G.shape[1] * lambda_c)


def run_blocks(
    train: Features,
    test: Features,
    precondition: Preconditioner,
    *,
    dtype="float64",
    device=None,
    **params,
) -> np.ndarray:
    """In-memory full score matrix ``S = sum_l precondition(G_l, V_l, **params) @ G_l^T`` -> float64 [m, n]
    (benchmarks use it to time a preconditioner on its own)."""
    check_grads(TrainData.of(train), test)
    dt = resolve_dtype(dtype)
    dev = resolve_device(device, train.grads[0])
    S = torch.zeros(test.n, train.n, dtype=dt, device=dev)
    # One reusable buffer for the converted training block: re-touching fresh memory for every block costs
    # page faults that are a visible share of the run time. Q never aliases G, and S is updated before the
    # buffer is overwritten by the next block.
    buf = None
    for l, (g, v) in enumerate(zip(train.grads, test.grads)):
        if g.dtype == dt and g.device == dev:
            G = g
        else:
            if buf is None or buf.numel() < g.numel():
                buf = torch.empty(max(x.numel() for x in train.grads), dtype=dt, device=dev)
            G = buf[: g.numel()].view(g.shape).copy_(g)
        V = v.to(device=dev, dtype=dt)
        Q = precondition(G, V, block=l, **params)
        S.addmm_(Q, G.T)
        del G, V, Q
    return S.cpu().numpy().astype(np.float64, copy=False)


def prepare_blocks(
    train: Features,
    test: Features,
    precondition: Preconditioner,
    *,
    dtype="float64",
    device=None,
    **params,
) -> list[torch.Tensor]:
    """In-memory query phase: ``[precondition(G_l, V_l, **params) for each block l]``, each [m, d_l]."""
    check_grads(TrainData.of(train), test)
    dt = resolve_dtype(dtype)
    dev = resolve_device(device, train.grads[0])
    out = []
    for l, (g, v) in enumerate(zip(train.grads, test.grads)):
        out.append(precondition(g.to(device=dev, dtype=dt), v.to(device=dev, dtype=dt), block=l, **params))
    return out


def compute(train: TrainData, p) -> tuple[torch.dtype, torch.device]:
    """The compute dtype and device of parameters ``p`` for this training side."""
    return resolve_dtype(p.dtype), resolve_device(p.device, train)


def block_sums(train: TrainData, l: int, dt, dev, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``sum over local shards of fn(G_s)`` for gradient block l (each G_s [rows, d_l] in dt/dev), summed over
    processes: the one pass that every additive statistic of the training gradients is."""
    total = None
    for g in train.block(l):
        part = fn(g.to(device=dev, dtype=dt))
        total = part if total is None else total + part
    if total is None:  # a process without shards still takes part in the reduction
        total = fn(torch.zeros(0, train.widths[l], device=dev, dtype=dt))
    return train.comm.reduce(total)


def block_damping(train: TrainData, l: int, dt, dev, lambda_c: float) -> torch.Tensor:
    """DataInf's damping of block l over every training sample: ``sum_i ||g_il||^2 / (n d_l lambda_c)``."""
    if not lambda_c > 0:
        raise InputError(f"method parameter 'lambda_c' must be > 0, got {lambda_c!r}")
    return memo_sums(train, ("sq_norm_sum", l, dt, dev), lambda: block_sums(
        train, l, dt, dev, lambda g: sq_norms(g).sum())) / (train.n * train.widths[l] * lambda_c)


def memo_sums(train: TrainData, key: tuple, make: Callable[[], torch.Tensor]) -> torch.Tensor:
    """A statistic of the training side (``make()``, a pass over its shards), kept in ``train.memo[key]``: the
    methods of one call share it, and a query session (``engine.query``) pays for it once, not per query. Keys
    start with the statistic's name, then (block, dtype, device); :mod:`engine.scoring.query_index` saves them
    with the run's query index."""
    if key not in train.memo:
        train.memo[key] = make()
    return train.memo[key]


GRAM_MEMO_BYTES = 256 << 20  # Gram factors kept for the next method of the same call while under this total


def gram_factor(train: TrainData, l: int, dt, dev) -> torch.Tensor:
    """A factor C [r, d_l] of block l's Gram matrix: ``C^T C / r = G^T G / n`` and ``trace(C^T C) / r =
    trace(G^T G) / n``, so every preconditioner that depends on G only through its Gram matrix and the
    damping (exact, LiSSA, paper LiSSA) gives the same result on C as on G.

    n < d_l: C = G itself (every process's rows gathered, in rank order). n >= d_l: A = sum_s G_s^T G_s is
    accumulated over the shards and C = sqrt(d_l / n) L^T with A = L L^T (Cholesky; eigendecomposition when A is
    singular), a [d_l, d_l] matrix however many samples there are.
    """
    key = ("gram", l, dt, dev)
    if key in train.memo:
        return train.memo[key]
    d = train.widths[l]
    if train.n < d:
        parts = [g.to(device=dev, dtype=dt) for g in train.block(l)]
        C = train.comm.gather(torch.cat(parts) if parts else torch.zeros(0, d, device=dev, dtype=dt))
    else:
        A = block_sums(train, l, dt, dev, lambda g: g.T @ g)
        L, info = torch.linalg.cholesky_ex(A)
        if int(info) == 0:
            F = L.T
        else:  # rank-deficient (e.g. a LoRA A block whose B is still 0): a square root from the eigenvectors
            w, U = torch.linalg.eigh(A)
            F = w.clamp_min(0).sqrt()[:, None] * U.T
        C = F * math.sqrt(d / train.n)
    used = sum(t.numel() * t.element_size() for k, t in train.memo.items() if k[0] == "gram")
    if used + C.numel() * C.element_size() <= GRAM_MEMO_BYTES:
        train.memo[key] = C
    return C


class LazyBlocks(Sequence):
    """A training side whose block l is made when it is read (``make(l)``), not all at once.

    Why: :func:`dot_queries` reads one block at a time, and converting a whole shard to float64 up front held a
    second, double-size copy of it (472 MB for 256 SmolLM2 samples, the largest allocation of the EK-FAC stage).
    Reading a block twice makes it twice; every caller reads each block once."""

    def __init__(self, count: int, make: Callable[[int], torch.Tensor]):
        self.count, self.make = count, make

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, l):
        if isinstance(l, slice):
            return [self[i] for i in range(*l.indices(self.count))]
        if not -self.count <= l < self.count:
            raise IndexError(l)
        return self.make(l % self.count)


def grad_train_blocks(shard: Features, p) -> Sequence[torch.Tensor]:
    """The training side of a shard: ``[G_l]`` in the compute dtype/device of parameters ``p``, each block
    converted as it is read (:class:`LazyBlocks`)."""
    if not shard.grads:
        raise InputError("this method needs per-sample gradients of the training samples (Features.grads)")
    dt = resolve_dtype(p.dtype)
    dev = resolve_device(p.device, shard.grads[0])
    grads = shard.grads
    return LazyBlocks(len(grads), lambda l: grads[l].to(device=dev, dtype=dt))


def gram_method(precondition: Preconditioner):
    """The query phase of a method whose preconditioner depends on G only through its Gram matrix and damping:
    ``Q_l = precondition(C_l, V_l, block=l, **params)`` with C_l the block's :func:`gram_factor`.

    The preconditioner takes the method's parameters (all but dtype/device) as explicit keyword arguments."""

    def queries(train: TrainData, test: Features, p) -> list[torch.Tensor]:
        check_grads(train, test)
        dt, dev = compute(train, p)
        kw = keywords(precondition, p)
        return [precondition(gram_factor(train, l, dt, dev), v.to(device=dev, dtype=dt), block=l, **kw)
                for l, v in enumerate(test.grads)]

    return queries


def dot_queries(Q: list[torch.Tensor], T: list[torch.Tensor]) -> np.ndarray:
    """``S = sum_l Q_l @ T_l^T`` for query blocks [m, d_l] and training blocks [n, d_l] -> float64 numpy [m, n].

    The second phase of every two-phase method, for a whole training set or one shard of it.
    """
    S = None  # sized from the first training block as it is read (a LazyBlocks block is made once)
    for q, t in zip(Q, T):
        if S is None:
            S = torch.zeros(q.shape[0], t.shape[0], dtype=q.dtype, device=q.device)
        S.addmm_(q, t.T)
    if S is None:
        raise InputError("no gradient blocks to score")
    return S.cpu().numpy().astype(np.float64, copy=False)


def full_score(queries: Callable, train_side: Callable, train, test: Features, p) -> np.ndarray:
    """``S = [dot_queries(Q, train_side(shard)) for every shard]`` with ``Q = queries(train, test, p)``:
    the whole score matrix [m, n] of a two-phase method (``train``: Features or TrainData)."""
    train = as_train_data(train)
    Q = queries(train, test, p)
    blocks = [dot_queries(Q, train_side(shard, p)) for _, _, shard in train.shards()]
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((test.n, 0))
