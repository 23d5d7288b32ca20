"""The random baseline: seeded, a function of (seed, test id, train id) alone, uniform on [0, 1)."""

import numpy as np
import pytest

from engine.errors import InputError
from engine.evaluation.metrics import acc_at_1, chance_acc
from engine.features.types import Features
from engine.scoring.methods import get_method, score_in_shards

MASK = (1 << 64) - 1


def _splitmix(x: int) -> int:
    """splitmix64 in plain Python integers (the published constants), masked to 64 bits."""
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def _reference(seed: int, m: int, n: int) -> np.ndarray:
    out = np.zeros((m, n))
    for j in range(m):
        for i in range(n):
            z = _splitmix((_splitmix((_splitmix(seed) + j) & MASK) + i) & MASK)
            out[j, i] = (z >> 11) / 2.0**53
    return out


def _side(n: int) -> Features:
    return Features(size=n)


def test_scores_equal_the_formula_in_plain_integers():
    S = get_method("random")(_side(13), _side(5), seed=7)
    np.testing.assert_array_equal(S, _reference(7, 5, 13))
    assert S.dtype == np.float64 and ((S >= 0) & (S < 1)).all()


def test_independent_of_shards_and_of_later_samples_and_seeded():
    m = get_method("random")
    full = m(_side(40), _side(6), seed=3)
    for shard in (1, 7, 40):
        blocks = [b for _, _, b in score_in_shards("random", _side(40), _side(6), shard, seed=3)]
        np.testing.assert_array_equal(np.concatenate(blocks, axis=1), full)
    np.testing.assert_array_equal(m(_side(25), _side(4), seed=3), full[:4, :25])
    assert not np.allclose(m(_side(40), _side(6), seed=4), full)


def test_uniform_and_at_chance():
    S = get_method("random")(_side(400), _side(300), seed=0)
    assert abs(S.mean() - 0.5) < 0.01 and abs(S.var() - 1 / 12) < 0.005
    train = [f"c{i % 4}" for i in range(400)]
    test = [f"c{j % 4}" for j in range(300)]
    assert abs(acc_at_1(S, train, test) - chance_acc(train, test)) < 0.08


def test_bad_seed_is_refused():
    with pytest.raises(InputError, match="'seed' must be >= 0"):
        get_method("random").make_params(seed=-1)
