"""Self-influence ``s(z_i, z_i)`` of every training sample: how much a sample supports its own loss.

The usual way to find mislabelled, duplicated or outlying training samples: a sample the model can only fit by
memorising it has a large self-influence. For a gradient method with queries ``Q(v)`` (its preconditioned test
gradient, :mod:`engine.methods`) and training side ``T``,

    s(z_i, z_i) = sum_l <Q_l(g_i), T_l(g_i)>          (the query built from the training sample's own gradient)

e.g. GradSim ``||g_i||^2``, the exact iHVP ``g_i^T H^-1 g_i``, TracIn ``sum_c eta_c ||g_i^c||^2``. Only the diagonal
is formed: the training samples are taken as queries in chunks, so memory is ``chunk x d`` and the ``n x n``
matrix never exists. Methods whose self-score says nothing (a cosine is 1 for every sample; representations and
baselines) are left out by the catalog's rule (:attr:`engine.catalog.MethodInfo.has_self_influence`).

Sign: as every score, larger = the sample more responsible for itself (paper IF = -s).
"""

from __future__ import annotations

import numpy as np
import torch

from engine.methods import Features, get_method


def sample_rows(f: Features, start: int, stop: int) -> Features:
    """The per-sample features of rows ``start:stop`` as a side of their own (statistics of the whole side, such as
    the K-FAC factor sums, are left out: a query side never reads them)."""
    return Features(
        grads=None if f.grads is None else [g[start:stop] for g in f.grads],
        reps=None if f.reps is None else f.reps[start:stop], block_names=f.block_names,
        history=tuple((w, [g[start:stop] for g in gs]) for w, gs in f.history),
        proj=None if f.proj is None else f.proj.rows(start, stop),
        rept=None if f.rept is None else f.rept[start:stop],
        texts=None if f.texts is None else f.texts[start:stop], size=len(range(start, min(stop, f.n))))


def self_influence(name: str, p, train: Features, chunk: int = 128) -> np.ndarray:
    """``[n]`` float64: ``s(z_i, z_i)`` of method ``name`` (parameters ``p``) for every training sample, computed
    ``chunk`` queries at a time (see the module docstring)."""
    method = get_method(name)
    n = train.n
    out = np.empty(n, dtype=np.float64)
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        Q = method.prepare(train, sample_rows(train, a, b), p)
        T = method.train_blocks(train, a, b, p)
        diag = sum((q * t.to(device=q.device, dtype=q.dtype)).sum(1) for q, t in zip(Q, T))
        out[a:b] = torch.as_tensor(diag).double().cpu().numpy()
    return out
