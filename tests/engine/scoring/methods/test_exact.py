import numpy as np
import pytest
import torch

from engine.features.types import Features
from engine.scoring.methods import get_method
from engine.scoring.methods.exact import damped_inverse, precondition_exact

from ._helpers import make_features, np_blocks, np_damping, rel_err


def exact_inv(train, test, lambda_c=10.0):
    """Explicit d x d Hessian per block, built as a loop of outer products, inverted with np.linalg.inv."""
    Gs, Vs = np_blocks(train), np_blocks(test)
    n = train.n
    S = np.zeros((test.n, n))
    for G, V in zip(Gs, Vs):
        d = G.shape[1]
        lam = np_damping(G, lambda_c)
        H = np.zeros((d, d))
        for i in range(n):
            H += np.outer(G[i], G[i]) / n
        H += lam * np.eye(d)
        Hinv = np.linalg.inv(H)
        for j in range(test.n):
            q = Hinv @ V[j]
            for i in range(n):
                S[j, i] += q @ G[i]
    return S


def test_exact_matches_inverse(feats):
    train, test = feats
    assert any(d < train.n for d in (g.shape[1] for g in train.grads))  # direct path
    assert any(d > train.n for d in (g.shape[1] for g in train.grads))  # Woodbury path
    S = get_method("exact")(train, test)
    assert S.shape == (test.n, train.n) and S.dtype == np.float64
    assert rel_err(S, exact_inv(train, test)) < 1e-9


@pytest.mark.parametrize("n,d", [(12, 40), (12, 12), (40, 12), (3, 200)])
def test_exact_block_solves_h(n, d):
    """Per block, Q solves H q = v for every test vector (both the Woodbury and the direct path)."""
    gen = torch.Generator().manual_seed(n * 1000 + d)
    G = torch.randn(n, d, generator=gen, dtype=torch.float64)
    V = torch.randn(4, d, generator=gen, dtype=torch.float64)
    Q = precondition_exact(G, V, lambda_c=10.0)
    lam = float((G * G).mean() / 10.0)
    H = G.T @ G / n + lam * torch.eye(d, dtype=torch.float64)
    np.testing.assert_allclose((Q @ H).numpy(), V.numpy(), rtol=0, atol=1e-10 * float(V.abs().max()))


def test_exact_equals_datainf_for_one_training_sample():
    """With n = 1 DataInf's swap of inverse and mean is exact (Sherman-Morrison), so the two must agree."""
    train, test = make_features(3, n=1)
    np.testing.assert_allclose(get_method("exact")(train, test), get_method("datainf")(train, test), rtol=1e-10)


def test_exact_zero_block():
    train, test = make_features(2)
    z = Features(grads=[torch.zeros_like(train.grads[2])])
    t = Features(grads=[test.grads[2]])
    assert np.all(get_method("exact")(z, t) == 0)


@pytest.mark.parametrize("n,d", [(12, 40), (12, 12), (40, 12), (3, 200)])
@pytest.mark.parametrize("form", ["scalar", "float", "per-column"])
def test_damped_inverse_equals_an_explicit_inverse(n, d, form):
    """The one damped solve (exact's blocks, the iHVP-error references) equals ``V (G^T G / n + Lambda)^{-1}``
    built with torch.linalg.inv, for a scalar damping (0-dim tensor or float: Lambda = lam I) and a per-column
    one ([d]: Lambda = diag(lam), columns on different scales), on both the Woodbury (n < d) and the direct path."""
    gen = torch.Generator().manual_seed(7 * n + d)
    scale = torch.logspace(-3, -1, d, dtype=torch.float64)  # columns on different scales, as LoRA A and B
    G = torch.randn(n, d, generator=gen, dtype=torch.float64) * scale
    V = torch.randn(5, d, generator=gen, dtype=torch.float64) * scale
    if form == "per-column":
        lam = (G * G).mean(0) / 10.0 + 1e-8
        Lambda = torch.diag(lam)
    else:
        lam = (G * G).mean() / 10.0
        Lambda = lam * torch.eye(d, dtype=torch.float64)
        lam = float(lam) if form == "float" else lam
    want = V @ torch.linalg.inv(G.T @ G / n + Lambda)  # H is symmetric: (H^-1 V^T)^T = V H^-1
    got = damped_inverse(G, V, lam)
    assert got.shape == V.shape and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-8, atol=1e-10 * float(want.abs().max()))
