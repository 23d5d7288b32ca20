"""The random baseline: seeded scores that know nothing about the samples, so the leaderboard shows where chance lies.

Formula: ``s(z_i, z'_j) = u(seed, j, i)``, a uniform number in [0, 1) that depends only on the seed, the test
sample's id ``j`` and the training sample's id ``i``:

    u = splitmix64(splitmix64(splitmix64(seed) + j) + i) >> 11, divided by 2^53        (arithmetic mod 2^64)

(splitmix64: Steele, Lea & Flood 2014, the seeding hash of Java's SplittableRandom and of xoshiro). Because each
score is a function of the global ids alone, the matrix is the same whatever the training shard layout, and the
scores of the first n training samples do not change when more samples are added. Its expected Acc@1 and
Coverage@k are the chance levels that ``engine.evaluation.metrics`` reports.

Shapes: reads no feature, only the sample counts (``Features.n``) -> S [n_test, n_train] float64.
Sign: as every method (larger = more responsible), but here it means nothing.
"""

from __future__ import annotations

import numpy as np

from engine.features.types import Features

from .base import register

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser of ``x + golden gamma``, element-wise on uint64 arrays (wrapping mod 2^64)."""
    z = np.asarray(x, dtype=np.uint64) + _GAMMA
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def uniform_scores(seed: int, test_ids: np.ndarray, train_ids: np.ndarray) -> np.ndarray:
    """``[len(test_ids), len(train_ids)]`` float64 in [0, 1): ``u(seed, j, i)`` of the module docstring."""
    with np.errstate(over="ignore"):
        row = splitmix64(splitmix64(np.array([seed], dtype=np.uint64)) + np.asarray(test_ids, np.uint64))
        z = splitmix64(row[:, None] + np.asarray(train_ids, np.uint64)[None, :])
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _blocks(train, test: Features, p):
    """One block per training shard of ``train`` (a TrainData): each score depends on its ids alone."""
    for start, stop in train.bounds:
        yield start, stop, uniform_scores(p.seed, np.arange(test.n), np.arange(start, stop))


@register("random", blocks=_blocks)
def random_baseline(train: Features, test: Features, p) -> np.ndarray:
    """Seeded uniform scores -> float64 [n_test, n_train]; p: :class:`engine.catalog.methods.RandomParams` (seed)."""
    return uniform_scores(p.seed, np.arange(test.n), np.arange(train.n))
