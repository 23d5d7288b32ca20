import numpy as np
import pytest
import torch

from engine.features.types import Features
from engine.scoring.methods import get_method

from ._helpers import make_features, np_blocks, np_damping, rel_err


def datainf_loop(train, test, lambda_c=10.0):
    """DataInf exactly as written: per test sample, per block, a loop over training samples."""
    Gs, Vs = np_blocks(train), np_blocks(test)
    n = train.n
    S = np.zeros((test.n, n))
    for j in range(test.n):
        for G, V in zip(Gs, Vs):
            lam = np_damping(G, lambda_c)
            v = V[j]
            h = np.zeros_like(v)
            for i in range(n):
                g = G[i]
                h += (v - (g @ v) / (lam + g @ g) * g) / (n * lam)
            for i in range(n):
                S[j, i] += h @ G[i]
    return S


@pytest.mark.parametrize("lambda_c", [10.0, 0.5])
def test_datainf_matches_loop(feats, lambda_c):
    train, test = feats
    S = get_method("datainf")(train, test, lambda_c=lambda_c)
    assert S.shape == (test.n, train.n) and S.dtype == np.float64
    assert rel_err(S, datainf_loop(train, test, lambda_c)) < 1e-10


def test_datainf_float32_close(feats):
    train, test = feats
    S = get_method("datainf")(train, test, dtype="float32")
    assert rel_err(S, datainf_loop(train, test)) < 1e-4


def test_datainf_zero_block_contributes_nothing():
    train, test = make_features(1)
    zero_train = Features(grads=[train.grads[0], torch.zeros_like(train.grads[1])], block_names=("a", "b"))
    two_test = Features(grads=test.grads[:2], block_names=("a", "b"))
    one_train = Features(grads=[train.grads[0]], block_names=("a",))
    one_test = Features(grads=[test.grads[0]], block_names=("a",))
    S2 = get_method("datainf")(zero_train, two_test)
    S1 = get_method("datainf")(one_train, one_test)
    assert np.all(np.isfinite(S2))
    np.testing.assert_allclose(S2, S1, rtol=1e-12)


def test_datainf_bad_lambda_c(feats):
    from engine.errors import InputError

    with pytest.raises(InputError, match="lambda_c"):
        get_method("datainf")(*feats, lambda_c=0)
