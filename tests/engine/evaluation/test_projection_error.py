import numpy as np
import pytest
from _features import structured_features

from engine.evaluation.projection_error import PROJECTED, projection_error


@pytest.fixture(scope="module")
def data():
    return structured_features(0, 40), structured_features(1, 8)


def test_error_shrinks_as_k_grows(data):
    train, test = data
    ks, seeds = (4, 16, 64), range(5)
    rows = projection_error(train, test, ks, seeds, lambda_c=10.0)
    assert len(rows) == 3 * len(ks) * len(seeds)
    for method in ("gradsim_proj", "gradcos_proj", "datainf_proj"):
        err = [np.mean([r["rel_frob"] for r in rows if r["method"] == method and r["k"] == k]) for k in ks]
        rho = [np.mean([r["spearman"] for r in rows if r["method"] == method and r["k"] == k]) for k in ks]
        assert err[0] > err[1] > err[2], (method, err)
        assert rho[0] < rho[1] < rho[2], (method, rho)
        assert rho[2] > 0.9
    r = rows[0]
    assert r["bytes_per_sample"] == 4 * (4 + 4) and r["full_bytes_per_sample"] == 4 * (48 + 160)
    assert all(0 <= r["top1"] <= 1 for r in rows)


def test_every_projected_method_is_measured():
    assert PROJECTED == ("gradsim_proj", "gradcos_proj", "datainf_proj")
