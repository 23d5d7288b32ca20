import numpy as np
import pytest
import torch

from engine.errors import InputError
from engine.features.types import Features
from engine.scoring.methods import REGISTRY, get_method, score_in_shards

from ._helpers import rel_err


@pytest.fixture
def rept_feats():
    gen = torch.Generator().manual_seed(0)
    h = 6
    # hidden states are large and gradients small, as in a real model
    train = torch.cat([5 * torch.randn(12, h, generator=gen), 1e-2 * torch.randn(12, h, generator=gen)], dim=1)
    test = torch.cat([5 * torch.randn(4, h, generator=gen), 1e-2 * torch.randn(4, h, generator=gen)], dim=1)
    train[3] = 0  # a zero signature scores 0
    return Features(rept=train), Features(rept=test)


def rept_loop(train, test, balance=False):
    """Pairwise cosine of the joined signatures, one pair at a time."""
    def sig(x):
        x = x.numpy().astype(np.float64)
        if balance:
            h = len(x) // 2
            parts = [x[:h], x[h:]]
            x = np.concatenate([p / np.linalg.norm(p) if np.linalg.norm(p) > 0 else p for p in parts])
        return x

    S = np.zeros((test.n, train.n))
    for j in range(test.n):
        v = sig(test.rept[j])
        for i in range(train.n):
            g = sig(train.rept[i])
            den = np.linalg.norm(v) * np.linalg.norm(g)
            S[j, i] = float(v @ g) / den if den > 0 else 0.0
    return S


@pytest.mark.parametrize("balance", [False, True])
def test_rept_matches_loop(rept_feats, balance):
    train, test = rept_feats
    S = get_method("rept")(train, test, balance=balance)
    assert rel_err(S, rept_loop(train, test, balance)) < 1e-12
    assert np.all(S[:, 3] == 0) and np.all(np.abs(S) <= 1 + 1e-12)
    parts = np.concatenate([b for _, _, b in score_in_shards("rept", train, test, 5, balance=balance)], axis=1)
    np.testing.assert_allclose(parts, S, atol=1e-12)


def test_balance_gives_the_gradient_part_weight(rept_feats):
    train, test = rept_feats
    h = train.rept.shape[1] // 2
    flipped = Features(rept=torch.cat([train.rept[:, :h], -train.rept[:, h:]], dim=1))
    raw = get_method("rept")(flipped, test) - get_method("rept")(train, test)
    bal = get_method("rept")(flipped, test, balance=True) - get_method("rept")(train, test, balance=True)
    assert np.abs(raw).max() < 1e-3 < np.abs(bal).max()


def test_rept_registry_and_errors(rept_feats):
    m = REGISTRY["rept"]
    assert m.needs == {"rept"} and m.score.__doc__ and m.queries and m.train_side
    train, test = rept_feats
    with pytest.raises(InputError, match="Features.rept"):
        get_method("rept")(Features(reps=torch.zeros(2, 3)), test)
    with pytest.raises(InputError, match="width"):
        get_method("rept")(train, Features(rept=torch.zeros(2, 4)))
