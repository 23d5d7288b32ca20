import numpy as np
import pytest
import torch

from engine.errors import InputError
from engine.features.grads import KroneckerFactors
from engine.features.types import Features, as_train_data
from engine.scoring.methods import get_method

from ._helpers import make_features, rel_err
from ._kronecker_helpers import explicit_scores, token_features


def test_ekfac_matches_explicit_matrix():
    train, test = token_features(0)
    S = get_method("ekfac")(train, test)
    assert S.shape == (test.n, train.n) and S.dtype == np.float64
    assert rel_err(S, explicit_scores(train, test, corrected=True)) < 1e-9
    S3 = get_method("ekfac")(train, test, lambda_c=3.0)
    assert rel_err(S3, explicit_scores(train, test, corrected=True, lambda_c=3.0)) < 1e-9


def _diagonal_in_kronecker_basis(n=30, m=3, shapes=((3, 4), (2, 5)), seed=1):
    """Gradients whose empirical Fisher is diagonal in the factors' eigenbasis: rotated gradients C = U diag(σ)
    with orthonormal columns U, so Cᵀ C is diagonal; the factors are arbitrary SPD matrices."""
    gen = torch.Generator().manual_seed(seed)
    grads, tests, act, grad = [], [], [], []
    for o, i in shapes:
        d = o * i
        QS = torch.linalg.qr(torch.randn(o, o, generator=gen, dtype=torch.float64))[0]
        QA = torch.linalg.qr(torch.randn(i, i, generator=gen, dtype=torch.float64))[0]
        grad.append(QS @ torch.diag(torch.rand(o, generator=gen, dtype=torch.float64) + 0.5 + torch.arange(o)) @ QS.T)
        act.append(QA @ torch.diag(torch.rand(i, generator=gen, dtype=torch.float64) + 0.5 + torch.arange(i)) @ QA.T)
        U = torch.linalg.qr(torch.randn(n, d, generator=gen, dtype=torch.float64))[0]
        C = U * torch.linspace(0.2, 3.0, d, dtype=torch.float64)
        grads.append((QS @ C.view(n, o, i) @ QA.T).reshape(n, d))
        tests.append(torch.randn(m, d, generator=gen, dtype=torch.float64))
    train = Features(grads=grads, kfac=KroneckerFactors(act, grad, tokens=3 * n, samples=n))
    return train, Features(grads=tests)


def test_ekfac_equals_exact_when_the_fisher_is_diagonal_in_the_kronecker_basis():
    train, test = _diagonal_in_kronecker_basis()
    exact = get_method("exact")(train, test)
    np.testing.assert_allclose(get_method("ekfac")(train, test), exact, rtol=1e-10, atol=1e-10 * np.abs(exact).max())
    # K-FAC's eigenvalues are those of the factors, not the gradients': it does not match here
    assert rel_err(get_method("kfac")(train, test), exact) > 1e-2


def test_ekfac_float32_close_to_float64():
    train, test = token_features(3)
    assert rel_err(get_method("ekfac")(train, test, dtype="float32"), get_method("ekfac")(train, test)) < 1e-4


def test_ekfac_needs_matching_factors():
    train, test = make_features(0)  # no factors
    with pytest.raises(InputError, match="kfac=True"):
        get_method("ekfac")(train, test)
    train, test = token_features(0)
    f = train.kfac
    with pytest.raises(InputError, match="samples"):
        get_method("ekfac")(Features(grads=train.grads, kfac=KroneckerFactors(f.act, f.grad, f.tokens, 99)), test)
    swapped = KroneckerFactors(f.act[::-1], f.grad[::-1], f.tokens, f.samples)
    with pytest.raises(InputError, match="width"):
        get_method("ekfac")(Features(grads=train.grads, kfac=swapped), test)
    with pytest.raises(InputError, match="blocks"):
        get_method("ekfac")(Features(grads=train.grads[:2], kfac=f), Features(grads=test.grads[:2]))


def test_ekfac_zero_block():
    train, test = token_features(4)
    z = [torch.zeros_like(g) for g in train.grads]
    assert np.all(get_method("ekfac")(Features(grads=z, kfac=train.kfac), test) == 0)


def test_ekfac_closer_to_exact_than_kfac_on_a_real_model(real_features):
    """On a tiny Llama's real LoRA gradients (n = 40 < d = 256, so the exact Fisher is low-rank and no
    Kronecker approximation is close), EK-FAC is still far nearer the exact iHVP than damping alone (v/λ) and,
    on average, nearer than K-FAC; its scores rank like exact's more than GradSim's do."""
    from scipy.stats import spearmanr

    from engine.scoring.methods._common import prepare_blocks
    from engine.scoring.methods.exact import precondition_exact

    train, test = real_features
    err = {}
    for name in ("ekfac", "kfac"):
        Q = get_method(name).queries(as_train_data(train), test, get_method(name).make_params())
        E = prepare_blocks(train, test, precondition_exact)
        err[name] = np.array([float((q - e).norm() / e.norm()) for q, e in zip(Q, E)])
    lam = [float(g.double().square().mean() / 10) for g in train.grads]
    ident = np.array([float((v.double() / l - e).norm() / e.norm())
                      for v, l, e in zip(test.grads, lam, prepare_blocks(train, test, precondition_exact))])
    assert np.all(err["ekfac"] < 0.7 * ident)
    assert err["ekfac"].mean() < err["kfac"].mean()
    exact = get_method("exact")(train, test)

    def rho(S):
        return np.mean([spearmanr(S[j], exact[j])[0] for j in range(test.n)])

    assert rho(get_method("ekfac")(train, test)) > rho(get_method("gradsim")(train, test)) + 0.1
