"""Small random inputs and helpers shared by the method tests: n=12 train, m=4 test, blocks of d in {5, 20, 40}.

d=5 < n exercises the direct d x d paths, d=20 and d=40 > n the Woodbury / low-rank paths.
"""

import numpy as np
import torch

from engine.features.types import Features

N_TRAIN, N_TEST, DIMS = 12, 4, (5, 20, 40)


def make_features(seed: int = 0, n: int = N_TRAIN, m: int = N_TEST, dims=DIMS, scale: float = 1.0, h: int = 8):
    gen = torch.Generator().manual_seed(seed)

    def grads(k):
        # Per-block scales differ, as in real LoRA gradients (A and B blocks live on different scales).
        return [scale * (0.5 + b) * torch.randn(k, d, generator=gen) for b, d in enumerate(dims)]

    names = tuple(f"block{b}" for b in range(len(dims)))
    g_train, g_test = grads(n), grads(m)
    # one earlier checkpoint plus the current one, for TracIn (weights = learning rates of the two epochs)
    h_train, h_test = grads(n), grads(m)
    train = Features(grads=g_train, reps=torch.randn(n, h, generator=gen), block_names=names,
                     history=((2e-3, h_train), (1e-3, g_train)))
    test = Features(grads=g_test, reps=torch.randn(m, h, generator=gen), block_names=names,
                    history=((2e-3, h_test), (1e-3, g_test)))
    return train, test


def np_blocks(features: Features) -> list[np.ndarray]:
    return [g.numpy().astype(np.float64) for g in features.grads]


def rel_err(a, b) -> float:
    """max|a - b| / max|b|."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def np_damping(G: np.ndarray, lambda_c: float = 10.0) -> float:
    """lambda_l = mean_i mean(g_il^2) / lambda_c, as a loop over samples."""
    return float(np.mean([np.mean(g**2) for g in G]) / lambda_c)
