"""TracIn (Pruthi et al. 2020, "TracInCP"): learning-rate weighted gradient dot products over epoch checkpoints.

Formula: ``s(z_i, z') = sum_c eta_c sum_l <g_l^c(z'), g_l^c(z_i)>`` over the checkpoints c in ``Features.history``
(the epochs up to and including the one being scored), ``eta_c`` = mean learning rate of epoch c — a first-order
estimate of how much the training steps on z_i lowered the loss on z'.
Shapes: per checkpoint, train grads ``G_l^c`` [n, d_l] and test grads ``V_l^c`` [m, d_l] -> scores [m, n] float64.
Sign: larger s = training sample more responsible (the paper's IF is -s).
Two-phase form: one query block ``eta_c V_l^c`` and one training block ``G_l^c`` per (checkpoint, block) pair.
Without a history (only the last checkpoint scored) this is GradSim scaled by that epoch's learning rate.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.errors import InputError

from ._common import dot_queries, resolve_device, resolve_dtype
from .base import Features, register


def _history(train: Features, test: Features):
    if not train.history or len(train.history) != len(test.history):
        raise InputError("tracin needs the gradients of every epoch checkpoint (Features.history) for train and "
                         "test; the pipeline provides them")
    return train.history, test.history


def prepare(train: Features, test: Features, *, dtype="float64", device=None, **_) -> list[torch.Tensor]:
    """``[eta_c * V_l^c for each checkpoint c, block l]`` in the compute dtype/device."""
    tr, te = _history(train, test)
    dt, dev = resolve_dtype(dtype), resolve_device(device, tr[0][1][0])
    return [w * v.to(device=dev, dtype=dt) for (w, _), (_, vs) in zip(tr, te) for v in vs]


def train_blocks(train: Features, start: int, stop: int, *, dtype="float64", device=None, **_) -> list[torch.Tensor]:
    """``[G_l^c[start:stop] for each checkpoint c, block l]``."""
    if not train.history:
        raise InputError("tracin needs Features.history")
    dt, dev = resolve_dtype(dtype), resolve_device(device, train.history[0][1][0])
    return [g[start:stop].to(device=dev, dtype=dt) for _, gs in train.history for g in gs]


@register(
    "tracin",
    {"grads"},
    "TracIn over the epoch checkpoints: s = sum_c eta_c <g^c(z'), g^c(z_i)>.",
    prepare=prepare,
    train_blocks=train_blocks,
    dtype="float64",
    device=None,
)
def tracin(train: Features, test: Features, *, dtype="float64", device=None) -> np.ndarray:
    """TracIn scores -> float64 [n_test, n_train]; larger = more responsible."""
    Q = prepare(train, test, dtype=dtype, device=device)
    n = int(train.history[0][1][0].shape[0])  # prepare has checked that the history is there
    return dot_queries(Q, train_blocks(train, 0, n, dtype=dtype, device=device))
