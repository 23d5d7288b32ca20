import numpy as np
import pytest
import torch

from engine.errors import InputError
from engine.features.grads import KroneckerFactors
from engine.features.types import Features
from engine.scoring.methods import get_method, score_in_shards

from ._helpers import make_features, rel_err
from ._kronecker_helpers import explicit_scores, token_features


def test_kfac_matches_explicit_kronecker_product():
    train, test = token_features(0)
    S = get_method("kfac")(train, test)
    assert S.shape == (test.n, train.n) and S.dtype == np.float64
    assert rel_err(S, explicit_scores(train, test, corrected=False)) < 1e-9
    assert rel_err(get_method("kfac")(train, test, lambda_c=2.5),
                   explicit_scores(train, test, corrected=False, lambda_c=2.5)) < 1e-9


def test_kfac_and_ekfac_equal_exact_when_the_kronecker_assumption_holds():
    """One token per sample and the same input x for all: g_i = dy_i ⊗ x, so (1/n) Σ g gᵀ = S ⊗ x xᵀ exactly."""
    gen = torch.Generator().manual_seed(5)
    n, m, shapes = 15, 3, ((3, 4), (5, 2))
    grads, tests, act, grad = [], [], [], []
    for o, i in shapes:
        x = torch.randn(i, generator=gen, dtype=torch.float64)
        dy = torch.randn(n, o, generator=gen, dtype=torch.float64)
        grads.append(torch.einsum("no,i->noi", dy, x).reshape(n, -1))
        tests.append(torch.randn(m, o * i, generator=gen, dtype=torch.float64))
        act.append(n * torch.outer(x, x))
        grad.append(dy.T @ dy)
    train = Features(grads=grads, kfac=KroneckerFactors(act, grad, tokens=n, samples=n))
    test = Features(grads=tests)
    exact = get_method("exact")(train, test)
    for name in ("kfac", "ekfac"):
        np.testing.assert_allclose(get_method(name)(train, test), exact, rtol=1e-9, atol=1e-9 * np.abs(exact).max())


@pytest.mark.parametrize("name", ["kfac", "ekfac"])
@pytest.mark.parametrize("shard_size", [1, 5, 12, 100])
def test_kfac_and_ekfac_shards_concatenate_to_full(name, shard_size):
    train, test = token_features(2)
    full = get_method(name)(train, test)
    parts = list(score_in_shards(name, train, test, shard_size))
    np.testing.assert_allclose(np.concatenate([p[2] for p in parts], axis=1), full, rtol=1e-12, atol=1e-12)


def test_kfac_needs_factors():
    with pytest.raises(InputError, match="K-FAC factors"):
        get_method("kfac")(*make_features(0))


def test_kfac_zero_block():
    train, test = token_features(4)
    z = [torch.zeros_like(g) for g in train.grads]
    assert np.all(get_method("kfac")(Features(grads=z, kfac=train.kfac), test) == 0)


def test_kfac_normalisation_with_several_tokens_per_sample():
    """S per sample, A per token. Two tokens per sample with the same input x and output gradients (a, b); every
    sample has a twin with (a, -b), so the cross-token terms cancel and the empirical Fisher is exactly
    (1/n) Σ_i Σ_t dy dyᵀ ⊗ x xᵀ = S ⊗ A with S = Σ dy dyᵀ / n_samples and A = Σ x xᵀ / n_tokens: K-FAC and EK-FAC
    then equal the exact iHVP. Normalising A per sample instead (2 x xᵀ) would double the curvature."""
    gen = torch.Generator().manual_seed(11)
    pairs, m, shapes = 8, 3, ((3, 4), (2, 5))
    n = 2 * pairs
    grads, tests, act, grad = [], [], [], []
    for o, i in shapes:
        x = torch.randn(i, generator=gen, dtype=torch.float64)
        a = torch.randn(pairs, o, generator=gen, dtype=torch.float64)
        b = torch.randn(pairs, o, generator=gen, dtype=torch.float64)
        dys = [torch.stack([a[p], s * b[p]]) for p in range(pairs) for s in (1.0, -1.0)]  # [2 tokens, out] each
        grads.append(torch.stack([(dy.T @ torch.stack([x, x])).reshape(-1) for dy in dys]))  # Σ_t dy_t ⊗ x
        tests.append(torch.randn(m, o * i, generator=gen, dtype=torch.float64))
        act.append(sum(torch.outer(x, x) * 2 for _ in dys))  # Σ over every token of x xᵀ
        grad.append(sum(dy.T @ dy for dy in dys))
        fisher = sum(torch.outer(g, g) for g in grads[-1]) / n  # the slow reference: (1/n) Σ g gᵀ
        S, A = grad[-1] / n, act[-1] / (2 * n)
        assert torch.allclose(torch.kron(S, A), fisher, atol=1e-12)
        assert not torch.allclose(torch.kron(S, act[-1] / n), fisher)  # A per sample: twice the curvature
    train = Features(grads=grads, kfac=KroneckerFactors(act, grad, tokens=2 * n, samples=n))
    test = Features(grads=tests)
    exact = get_method("exact")(train, test)
    for name in ("kfac", "ekfac"):
        np.testing.assert_allclose(get_method(name)(train, test), exact, rtol=1e-9, atol=1e-9 * np.abs(exact).max())
    wrong = Features(grads=grads, kfac=KroneckerFactors(act, grad, tokens=n, samples=n))
    assert rel_err(get_method("kfac")(wrong, test), exact) > 1e-3
