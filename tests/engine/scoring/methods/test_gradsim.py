import numpy as np

from engine.scoring.methods import get_method

from ._helpers import np_blocks, rel_err


def gradsim_loop(train, test):
    Gs, Vs = np_blocks(train), np_blocks(test)
    S = np.zeros((test.n, train.n))
    for j in range(test.n):
        for i in range(train.n):
            S[j, i] = sum(float(np.dot(V[j], G[i])) for G, V in zip(Gs, Vs))
    return S


def test_gradsim_matches_loop(feats):
    train, test = feats
    S = get_method("gradsim")(train, test)
    assert S.shape == (test.n, train.n) and S.dtype == np.float64
    assert rel_err(S, gradsim_loop(train, test)) < 1e-12


def test_gradsim_float32(feats):
    train, test = feats
    S = get_method("gradsim")(train, test, dtype="float32")
    assert S.dtype == np.float64
    assert rel_err(S, gradsim_loop(train, test)) < 1e-5
