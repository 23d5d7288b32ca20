"""Shared plumbing of the gradient methods: input checks, dtype/device handling, damping, the two phases.

Every gradient method here is "precondition the test gradient, then dot with the training gradients":

    Q_l = P_l(G_l, V_l)            [m, d_l]   (P_l may use all n training gradients of block l)
    S   = sum_l Q_l @ G_l^T        [m, n]     S[j, i] = s(z_i, z'_j), larger = more responsible

where ``G_l`` [n, d_l] are the training and ``V_l`` [m, d_l] the test gradients of LoRA block ``l``. A method
supplies only the per-block preconditioner ``P_l``; :func:`run_blocks` does the fused full computation (each
block converted to the compute dtype once) and :func:`prepare_blocks` the "queries only" phase that
``score_in_shards`` combines with :func:`grad_train_blocks` shard by shard. A method's parameters arrive as its
catalog dataclass ``p`` (:mod:`engine.catalog`); :func:`gradient_method` hands the preconditioner the fields it
names as explicit keyword arguments.

Computation happens in ``dtype`` (default float64) on ``device`` (default: the device the training gradients
already live on, so CUDA inputs are computed on the GPU); only the final score matrix is moved to the CPU.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from engine.errors import InputError

from .base import Features, keywords

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


def resolve_device(device, reference: torch.Tensor) -> torch.device:
    """``None`` -> the device of ``reference`` (the training features); otherwise ``torch.device(device)``."""
    return reference.device if device is None else torch.device(device)


def check_grads(train: Features, test: Features) -> None:
    """Both sides have gradients with the same blocks (count and width); raise InputError otherwise."""
    if not train.grads:
        raise InputError("this method needs per-sample gradients of the training samples (Features.grads)")
    if not test.grads:
        raise InputError("this method needs per-sample gradients of the test samples (Features.grads)")
    if len(train.grads) != len(test.grads):
        raise InputError(
            f"train has {len(train.grads)} gradient blocks but test has {len(test.grads)}; they must match"
        )
    for l, (g, v) in enumerate(zip(train.grads, test.grads)):
        if g.ndim != 2 or v.ndim != 2 or g.shape[1] != v.shape[1]:
            name = train.block_names[l] if l < len(train.block_names) else f"#{l}"
            raise InputError(
                f"gradient block {name}: train shape {tuple(g.shape)} and test shape {tuple(v.shape)} "
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
    """Full score matrix ``S = sum_l precondition(G_l, V_l, **params) @ G_l^T`` -> float64 [m, n]."""
    check_grads(train, test)
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
    """The query phase: ``[precondition(G_l, V_l, **params) for each block l]``, each [m, d_l]."""
    check_grads(train, test)
    dt = resolve_dtype(dtype)
    dev = resolve_device(device, train.grads[0])
    out = []
    for l, (g, v) in enumerate(zip(train.grads, test.grads)):
        out.append(precondition(g.to(device=dev, dtype=dt), v.to(device=dev, dtype=dt), block=l, **params))
    return out


def grad_train_blocks(train: Features, start: int, stop: int, p) -> list[torch.Tensor]:
    """The training side of a shard: ``[G_l[start:stop]]`` in the compute dtype/device of parameters ``p``."""
    if not train.grads:
        raise InputError("this method needs per-sample gradients of the training samples (Features.grads)")
    dt = resolve_dtype(p.dtype)
    dev = resolve_device(p.device, train.grads[0])
    return [g[start:stop].to(device=dev, dtype=dt) for g in train.grads]


def gradient_method(precondition: Preconditioner, **fixed):
    """The ``(score, queries)`` pair of a gradient method from its per-block preconditioner.

    The preconditioner ``precondition(G, V, *, block, **params)`` takes the method's parameters (all but
    dtype/device) as explicit keyword arguments, and the block index; ``fixed`` adds keyword arguments that
    are not parameters.
    """

    def score(train: Features, test: Features, p) -> np.ndarray:
        return run_blocks(train, test, precondition, dtype=p.dtype, device=p.device,
                          **keywords(precondition, p), **fixed)

    def queries(train: Features, test: Features, p) -> list[torch.Tensor]:
        return prepare_blocks(train, test, precondition, dtype=p.dtype, device=p.device,
                              **keywords(precondition, p), **fixed)

    return score, queries


def dot_queries(Q: list[torch.Tensor], T: list[torch.Tensor]) -> np.ndarray:
    """``S = sum_l Q_l @ T_l^T`` for query blocks [m, d_l] and training blocks [n, d_l] -> float64 numpy [m, n].

    The second phase of every two-phase method, for a whole training set or one shard of it.
    """
    S = torch.zeros(Q[0].shape[0], T[0].shape[0], dtype=Q[0].dtype, device=Q[0].device)
    for q, t in zip(Q, T):
        S.addmm_(q, t.T)
    return S.cpu().numpy().astype(np.float64, copy=False)


def two_phase_score(queries: Callable, train_side: Callable):
    """``score(train, test, p) = dot_queries(queries(train, test, p), train_side(train, 0, n, p))``."""

    def score(train: Features, test: Features, p) -> np.ndarray:
        Q = queries(train, test, p)
        return dot_queries(Q, train_side(train, 0, train.n, p))

    return score
