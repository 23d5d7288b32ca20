"""The concentration of a ranking's positive influence, against a plain loop."""

import math

import numpy as np
import pytest

from engine.evaluation.concentration import concentration


def _reference(values, top):
    pos = sorted((v for v in values if not math.isnan(v) and v > 0), reverse=True)
    total = sum(pos)
    running, curve = 0.0, [0.0]
    for v in pos:
        running += v
        curve.append(running / total)
    n_half = next(k for k, c in enumerate(curve) if c >= 0.5)
    return curve, curve[min(top, len(pos))], n_half


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_a_loop(seed):
    rng = np.random.default_rng(seed)
    v = rng.standard_t(2, size=200)
    v[rng.random(200) < 0.05] = np.nan
    c = concentration(v, top=10)
    curve, top_share, n_half = _reference(list(v), 10)
    np.testing.assert_allclose(c.curve, curve, rtol=1e-12)
    assert c.top_share == pytest.approx(top_share) and c.n_half == n_half
    assert c.positive == pytest.approx(sum(x for x in v if x > 0)) and c.n == int((~np.isnan(v)).sum())
    assert c.negative == pytest.approx(sum(x for x in v if x < 0))


def test_one_dominant_sample_and_edge_cases():
    c = concentration([10.0, 0.1, 0.1, -5.0], top=1)
    assert c.n_half == 1 and c.top_share == pytest.approx(10 / 10.2) and c.n_positive == 3
    none = concentration([-1.0, 0.0, float("nan")])
    assert math.isnan(none.top_share) and none.n_half == 0 and none.curve.tolist() == [0.0]
    few = concentration([1.0, 1.0], top=10)
    assert few.top_share == 1.0 and few.n_half == 1
