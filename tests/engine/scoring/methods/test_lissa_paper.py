import numpy as np

from engine.scoring.methods import get_method

from ._helpers import make_features, np_blocks, np_damping, rel_err


def lissa_paper_loop(train, test, iterations=3, scale=1000.0, alpha=1.0, lambda_c=10.0):
    """The paper code's recursion: h <- v + h - alpha * sum_i ((g_i.h) g_i - lam h) / n / scale; score <h_T, g_i>."""
    Gs, Vs = np_blocks(train), np_blocks(test)
    n = train.n
    S = np.zeros((test.n, n))
    for j in range(test.n):
        for G, V in zip(Gs, Vs):
            lam = np_damping(G, lambda_c)
            v = V[j]
            h = v.copy()
            for _ in range(iterations):
                tmp = np.zeros_like(h)
                for i in range(n):
                    tmp += ((G[i] @ h) * G[i] - lam * h) / n / scale
                h = v + h - alpha * tmp
            for i in range(n):
                S[j, i] += h @ G[i]
    return S


def test_lissa_paper_matches_loop(feats):
    train, test = feats
    S = get_method("lissa_paper")(train, test)
    assert rel_err(S, lissa_paper_loop(train, test)) < 1e-12
    # a larger HVP term, so the test also sees the lambda sign and the Gauss-Newton part
    S2 = get_method("lissa_paper")(train, test, scale=5.0, iterations=5, alpha=0.5)
    assert rel_err(S2, lissa_paper_loop(train, test, iterations=5, scale=5.0, alpha=0.5)) < 1e-12


def test_lissa_paper_is_four_times_gradsim_when_hvp_small():
    train, test = make_features(5, scale=0.01)  # ||g||^2 ~ 1e-3 << scale = 1000
    S = get_method("lissa_paper")(train, test)
    G = get_method("gradsim")(train, test)
    assert rel_err(S, 4.0 * G) < 1e-4  # deviation ~ lambda_max(H) / scale ~ 1e-5
    assert np.array_equal(np.argsort(-S, axis=1, kind="stable"), np.argsort(-G, axis=1, kind="stable"))


def test_lissa_paper_minus_sign_on_lambda():
    """A 1-d block where every training gradient is [a]: H_gn = a^2 and lambda = a^2/10, so one step gives
    h1 = v + v - (a^2 - a^2/10) v / scale (the damping SUBTRACTED), and s = h1 * a for every training sample."""
    import torch

    from engine.features.types import Features

    a, v, scale = 3.0, 2.0, 100.0
    train = Features(grads=[torch.full((4, 1), a)])
    test = Features(grads=[torch.full((1, 1), v)])
    S = get_method("lissa_paper")(train, test, iterations=1, scale=scale)
    h1 = 2 * v - (a * a - a * a / 10) * v / scale
    np.testing.assert_allclose(S, np.full((1, 4), h1 * a), rtol=1e-12)
