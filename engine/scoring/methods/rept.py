"""RepT (representation gradient tracing; Li, Zhao, Li, Sun, arXiv 2510.02334, the follow-up of 2409.19998).

Each sample gets a signature ``phi(z) = [h(z), dh(z)]`` (:mod:`engine.features.rept`): the hidden state at the last
prompt token joined (concatenated) with the gradient of the response loss w.r.t. that hidden state, i.e. at the
position whose output predicts the first response token. Score: cosine of the signatures,

    s(z_i, z') = <phi(z'), phi(z_i)> / (||phi(z')|| ||phi(z_i)||)        in [-1, 1], larger = more responsible.

Choices, following the authors' code (github.com/plumprc/RepT, ``utils.py`` / ``tracing.py``, read for reference):
- layer: the final hidden state (HF ``hidden_states[-1]``, after the final norm, the same vector RepSim uses) by
  default; the paper picks a "phase transition" layer (largest change between consecutive layers' representations
  on a probing set), exposed in the code as ``--layer`` with default -1; ``engine.features.rept.rept_features`` takes
  ``layer``, the pipeline uses -1.
- gradient: of the mean cross-entropy over the response tokens only (the reference masks the prompt), read at
  the last prompt position (the reference slices the hidden-state gradient from ``prompt_len - 1``).
- joining: plain concatenation of the raw vectors, then cosine; no per-part normalisation (``balance=False``).
  Because ``||h||`` is usually much larger than ``||dh||``, the raw join leans towards RepSim; ``balance=True``
  (our option, not in the reference) scales both parts to unit length first so they weigh equally.
- model: the fine-tuned model at the scored checkpoint, eval mode.
Shapes: ``Features.rept`` [n, 2h] for train and test -> scores [n_test, n_train] float64. A zero signature scores 0.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.errors import InputError
from engine.features.types import Features, TrainData

from ._common import full_score, resolve_device, resolve_dtype
from .base import register


def _unit(x: torch.Tensor) -> torch.Tensor:
    norm = x.norm(dim=1, keepdim=True)
    return torch.where(norm > 0, x / norm.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(x))


def _signature(x: torch.Tensor, balance: bool) -> torch.Tensor:
    if balance:
        h = x.shape[1] // 2
        x = torch.cat([_unit(x[:, :h]), _unit(x[:, h:])], dim=1)
    return _unit(x)


def _check(f: Features, side: str) -> None:
    if f.rept is None:
        raise InputError(f"rept needs RepT features of the {side} samples (Features.rept)")
    if f.rept.ndim != 2 or f.rept.shape[1] % 2:
        raise InputError(f"rept: {side} features must be [n, 2h], got {tuple(f.rept.shape)}")


def queries(train: TrainData, test: Features, p) -> list[torch.Tensor]:
    """Unit-length test signatures, one block [m, 2h] (checked against the first training shard)."""
    first = train.shard(0)
    _check(first, "training")
    _check(test, "test")
    if first.rept.shape[1] != test.rept.shape[1]:
        raise InputError(f"rept: train features {tuple(first.rept.shape)} and test features "
                         f"{tuple(test.rept.shape)} must have the same width")
    dev = resolve_device(p.device, train)
    return [_signature(test.rept.to(device=dev, dtype=resolve_dtype(p.dtype)), p.balance)]


def train_side(shard: Features, p) -> list[torch.Tensor]:
    """Unit-length training signatures of the shard, one block [rows, 2h]."""
    _check(shard, "training")
    dev = resolve_device(p.device, shard.rept)
    return [_signature(shard.rept.to(device=dev, dtype=resolve_dtype(p.dtype)), p.balance)]


@register("rept", queries=queries, train_side=train_side)
def rept(train: Features | TrainData, test: Features, p) -> np.ndarray:
    """Cosine of RepT signatures -> float64 [n_test, n_train] in [-1, 1]; larger = more responsible.

    p: :class:`engine.catalog.methods.ReptParams` (balance, dtype, device).
    """
    return full_score(queries, train_side, train, test, p)
