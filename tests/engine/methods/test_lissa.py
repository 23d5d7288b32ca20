import warnings

import numpy as np
import pytest
import torch

from ._helpers import make_features, np_blocks, np_damping, rel_err
from engine.methods import get_method
from engine.methods.exact import precondition_exact
from engine.methods.lissa import auto_scale, precondition_lissa, top_eigenvalue_gn


def lissa_loop(train, test, iterations, scale, lambda_c=10.0):
    """LiSSA as written, per test sample and per block: h <- v + h - H h / scale, H h as a loop over samples."""
    Gs, Vs = np_blocks(train), np_blocks(test)
    n = train.n
    S = np.zeros((test.n, n))
    for j in range(test.n):
        for G, V in zip(Gs, Vs):
            lam = np_damping(G, lambda_c)
            v = V[j]
            h = v.copy()
            for _ in range(iterations):
                Hh = lam * h
                for i in range(n):
                    Hh += (G[i] @ h) * G[i] / n
                h = v + h - Hh / scale
            for i in range(n):
                S[j, i] += (h / scale) @ G[i]
    return S


def test_lissa_fixed_iterations_match_loop(feats):
    train, test = feats
    S = get_method("lissa")(train, test, iterations=25, scale=50.0)
    assert rel_err(S, lissa_loop(train, test, 25, 50.0)) < 1e-12


def test_lissa_converges_to_exact(feats):
    train, test = feats
    S = get_method("lissa")(train, test)
    S_exact = get_method("exact")(train, test)
    assert rel_err(S, S_exact) <= 1e-3


@pytest.mark.parametrize("block", [0, 1, 2])
def test_lissa_block_ihvp_within_tol(feats, block):
    """Per block and per test vector the relative iHVP error is below the tol it promises."""
    train, test = feats
    G = train.grads[block].double()
    V = test.grads[block].double()
    Q = precondition_lissa(G, V, tol=1e-4)
    Q_exact = precondition_exact(G, V)
    err = ((Q - Q_exact).norm(dim=1) / Q_exact.norm(dim=1)).max()
    assert float(err) <= 1e-4


def test_auto_scale_exceeds_lambda_max(feats):
    train, _ = feats
    for g in train.grads:
        G = g.double()
        lam = (G * G).mean() / 10
        top = torch.linalg.eigvalsh(G.T @ G / G.shape[0]).max() + lam
        s = auto_scale(G, lam)
        assert float(s) > float(top)
        est = float(top_eigenvalue_gn(G))  # Rayleigh quotient: a lower bound that gets close
        assert 0.97 * float(top - lam) <= est <= float(top - lam) * (1 + 1e-12)


def test_lissa_warns_when_not_converged(feats):
    train, test = feats
    with pytest.warns(RuntimeWarning, match="did not reach"):
        get_method("lissa")(train, test, max_iter=3)


def test_lissa_converged_run_is_silent(feats):
    train, test = feats
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_method("lissa")(train, test)


def test_lissa_diverging_scale_is_an_error():
    from engine.errors import InputError

    train, test = make_features(4)
    with pytest.raises(InputError, match="diverged"):
        get_method("lissa")(train, test, scale=1e-3, max_iter=5000)
