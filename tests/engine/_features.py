"""Synthetic per-sample gradients with structure, shared by the projection tests."""

import torch

from engine.features.types import Features


def structured_features(seed: int, n: int, dims=(48, 160)) -> Features:
    """``n`` samples' gradients in blocks of ``dims`` columns: a few directions shared by every call (so train and
    test scores have structure, as real gradients do) plus noise drawn from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    shared = torch.Generator().manual_seed(99)
    out = []
    for b, d in enumerate(dims):
        basis = torch.randn(3, d, generator=shared)
        out.append((0.5 + b) * (torch.randn(n, 3, generator=gen) @ basis + 0.5 * torch.randn(n, d, generator=gen)))
    return Features(grads=out, block_names=tuple(f"b{b}" for b in range(len(dims))))
