"""LoRA dropout with masks fixed per training sample: the mask depends only on (seed, epoch, sample id, LoRA module,
token position, feature), never on which other samples share the batch or where the sample sits in it.

Why: the retraining analysis (engine.analysis.retrain) retrains without some training samples and attributes the
change of the test loss to their removal. With ordinary dropout every mask is redrawn once the batches change, so a
retraining differs from the original by a whole new dropout trajectory; with these masks every kept sample sees
exactly the noise it saw in the original run (the data order is fixed the same way, engine.model.finetune).

The mask is a counter-based hash (murmur3's 32-bit finaliser, computed with int64 tensor ops on the input's
device): ``keep = hash(row key, module, position * in_features + feature) >= p * 2**32``, output
``x * keep / (1 - p)`` as ``torch.nn.Dropout``. Only peft's ``lora_dropout`` modules are replaced (for the length
of a fine-tune, :func:`per_sample_dropout`); other dropout layers of a base model (none in Llama-family configs,
whose ``attention_dropout`` is 0) keep drawing from the global generator, seeded once per fine-tune.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

MASK32 = 0xFFFFFFFF


def _mul32(h: torch.Tensor, c: int) -> torch.Tensor:
    """``h * c mod 2**32`` for int64 ``h`` in [0, 2**32) without int64 overflow (16-bit halves)."""
    lo, hi = h & 0xFFFF, h >> 16
    return (lo * c + (((hi * c) & 0xFFFF) << 16)) & MASK32


def fmix32(h: torch.Tensor) -> torch.Tensor:
    """murmur3's finaliser: a bijection of [0, 2**32) with full avalanche (int64 tensor in, int64 tensor out)."""
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def _fmix_int(x: int) -> int:
    return int(fmix32(torch.tensor([x & MASK32], dtype=torch.int64))[0])


def row_keys(seed: int, epoch: int, sample_ids) -> torch.Tensor:
    """One 32-bit key per sample of a batch [B] (int64) from (seed, epoch, sample id)."""
    base = _fmix_int(_fmix_int(seed) ^ _fmix_int(epoch + 0x9E3779B9))
    ids = torch.as_tensor(list(sample_ids), dtype=torch.int64)
    return fmix32(fmix32(ids & MASK32) ^ base)


def dropout_mask(keys: torch.Tensor, module: int, T: int, width: int, p: float, device=None) -> torch.Tensor:
    """Keep-mask [B, T, width] (bool) for rows with ``keys`` [B] in LoRA module number ``module``."""
    mkey = _fmix_int(module * 0x27D4EB2F + 0x165667B1)
    k = fmix32(keys.to(device) ^ mkey)[:, None, None]  # [B, 1, 1]
    elem = torch.arange(T * width, device=device, dtype=torch.int64).view(1, T, width)
    h = fmix32((fmix32(elem ^ k) + (k >> 7)) & MASK32)
    return h >= int(p * 2 ** 32)


class BatchRows:
    """The current batch's row keys, shared by every :class:`SampleDropout` of a model (set before each step)."""

    keys: torch.Tensor | None = None


class SampleDropout(torch.nn.Module):
    """Drop-in for ``torch.nn.Dropout(p)`` on [B, T, in] inputs with per-sample masks (see the module docstring)."""

    def __init__(self, p: float, module: int, rows: BatchRows):
        super().__init__()
        self.p, self.module, self.rows = float(p), int(module), rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.rows.keys is None or x.dim() != 3 or x.shape[0] != self.rows.keys.shape[0]:
            raise RuntimeError("SampleDropout needs the batch's row keys (engine.model.finetune sets them per step)")
        keep = dropout_mask(self.rows.keys, self.module, x.shape[1], x.shape[2], self.p, x.device)
        return x * keep.to(x.dtype) / (1.0 - self.p)


@contextmanager
def per_sample_dropout(model):
    """Replace peft's ``lora_dropout`` ``nn.Dropout`` modules by :class:`SampleDropout` while the block runs;
    yields the :class:`BatchRows` to fill before every forward (None when the model has no active dropout)."""
    rows = BatchRows()
    swapped = []
    index = 0
    for _, m in model.named_modules():
        drops = getattr(m, "lora_dropout", None)
        if not isinstance(drops, torch.nn.ModuleDict):
            continue
        for name in list(drops.keys()):
            old = drops[name]
            if isinstance(old, torch.nn.Dropout) and old.p > 0:
                drops[name] = SampleDropout(old.p, index, rows)
                swapped.append((drops, name, old))
            index += 1
    try:
        yield rows if swapped else None
    finally:
        for drops, name, old in swapped:
            drops[name] = old
