import numpy as np
import pytest

from engine.scoring.methods import get_method, score_in_shards

from ._helpers import rel_err
from ._proj_helpers import projected_np


def datainf_proj_loop(train, test, k, seed, lambda_c=10.0):
    """DataInf on the projected vectors, damping from the projected norms over the ORIGINAL width d_l."""
    Gs, Vs = projected_np(train, k, seed), projected_np(test, k, seed)
    n = train.n
    S = np.zeros((test.n, n))
    for G, V, g_full in zip(Gs, Vs, train.grads):
        d = g_full.shape[1]
        lam = float(np.mean([g @ g for g in G]) / (d * lambda_c))
        for j in range(test.n):
            h = sum(V[j] - (G[i] @ V[j]) / (lam + G[i] @ G[i]) * G[i] for i in range(n)) / (n * lam)
            for i in range(n):
                S[j, i] += float(h @ G[i])
    return S


@pytest.mark.parametrize("k", [4, 17])
def test_datainf_proj_matches_loop(feats, k):
    train, test = feats
    S = get_method("datainf_proj")(train, test, proj_dim=k, proj_seed=2, lambda_c=5.0)
    assert rel_err(S, datainf_proj_loop(train, test, k, 2, lambda_c=5.0)) < 1e-6
    parts = np.concatenate([b for _, _, b in score_in_shards("datainf_proj", train, test, 5, proj_dim=k, proj_seed=2,
                                                             lambda_c=5.0)], axis=1)
    np.testing.assert_allclose(parts, S, rtol=1e-10, atol=1e-12 * np.abs(S).max())


def test_datainf_proj_wide_is_datainf(feats):
    train, test = feats
    np.testing.assert_allclose(get_method("datainf_proj")(train, test, proj_dim=64),
                               get_method("datainf")(train, test), rtol=1e-10)
