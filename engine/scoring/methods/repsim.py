"""RepSim: cosine similarity of representations (final-layer hidden state at the last prompt token).

Formula: ``s(z_i, z') = <r(z'), r(z_i)> / (||r(z')|| ||r(z_i)||)``; a zero vector has similarity 0 to everything.
Shapes: train reps [n, h], test reps [m, h] -> S [m, n] float64 in [-1, 1].
Sign: larger = more similar = more responsible.
Two-phase form: ``Q = normalize(test reps)``, training side ``normalize(train reps[shard])``.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.errors import InputError
from engine.features.types import Features, TrainData

from ._common import full_score, resolve_device, resolve_dtype
from .base import register


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


def _check(train: Features, test: Features) -> None:
    if train.reps is None or test.reps is None:
        raise InputError("repsim needs representations of the training and test samples (Features.reps)")
    if train.reps.ndim != 2 or test.reps.ndim != 2 or train.reps.shape[1] != test.reps.shape[1]:
        raise InputError(
            f"repsim: train reps {tuple(train.reps.shape)} and test reps {tuple(test.reps.shape)} "
            "must both be [n, h] with the same h"
        )


def queries(train: TrainData, test: Features, p) -> list[torch.Tensor]:
    """Unit-normalised test representations, one block [m, h] (checked against the first training shard)."""
    _check(train.shard(0), test)
    dev = resolve_device(p.device, train)
    return [_unit(test.reps.to(device=dev, dtype=resolve_dtype(p.dtype)))]


def train_side(shard: Features, p) -> list[torch.Tensor]:
    """Unit-normalised training representations of the shard, one block [rows, h]."""
    if shard.reps is None:
        raise InputError("repsim needs representations of the training samples (Features.reps)")
    dev = resolve_device(p.device, shard.reps)
    return [_unit(shard.reps.to(device=dev, dtype=resolve_dtype(p.dtype)))]


@register("repsim", queries=queries, train_side=train_side)
def repsim(train: Features | TrainData, test: Features, p) -> np.ndarray:
    """Cosine similarity matrix -> float64 [n_test, n_train]; larger = more responsible."""
    return full_score(queries, train_side, train, test, p)
