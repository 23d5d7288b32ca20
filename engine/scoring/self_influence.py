"""Self-influence ``s(z_i, z_i)`` of every training sample: how much a sample supports its own loss.

The usual way to find mislabelled, duplicated or outlying training samples: a sample the model can only fit by
memorising it has a large self-influence. For a gradient method with queries ``Q(v)`` (its preconditioned test
gradient, :mod:`engine.scoring.methods`) and training side ``T``,

    s(z_i, z_i) = sum_l <Q_l(g_i), T_l(g_i)>          (the query built from the training sample's own gradient)

e.g. GradSim ``||g_i||^2``, the exact iHVP ``g_i^T H^-1 g_i``, TracIn ``sum_c eta_c ||g_i^c||^2``. Only the diagonal
is formed: the training samples are taken as queries in chunks, so memory is ``chunk x d`` and the ``n x n``
matrix never exists. Methods whose self-score says nothing (a cosine is 1 for every sample; representations and
baselines) are left out by the catalog's rule (:attr:`engine.catalog.methods.MethodInfo.has_self_influence`).

Sign: as every score, larger = the sample more responsible for itself (paper IF = -s).
"""

from __future__ import annotations

import numpy as np
import torch

from engine.features.types import Features, TrainData, as_train_data, slice_features
from engine.scoring.methods import get_method


def self_influence(name: str, p, train: Features | TrainData, proj_key=None, chunk: int = 128) -> np.ndarray:
    """``[n]`` float64: ``s(z_i, z_i)`` of method ``name`` (parameters ``p``) for every training sample, computed
    ``chunk`` queries at a time, shard by shard (see the module docstring). ``proj_key``: the projection the method
    reads (``*_proj``). Only the rows of ``train``'s own shards are filled (the others stay 0). Under torchrun
    call it in one process over every shard: a preconditioned method's query phase sums over the processes for
    one set of queries that all of them share."""
    method = get_method(name)
    data = as_train_data(train)
    out = np.zeros(data.n, dtype=np.float64)
    for i, (start, stop) in enumerate(data.bounds):
        shard = data.shard(i, proj_key)
        for a in range(0, stop - start, chunk):
            b = min(a + chunk, stop - start)
            rows = slice_features(shard, a, b)
            Q = method.queries(data, rows, p)
            T = method.train_side(rows, p)
            diag = sum((q * t.to(device=q.device, dtype=q.dtype)).sum(1) for q, t in zip(Q, T))
            out[start + a:start + b] = torch.as_tensor(diag).double().cpu().numpy()
    return out
