import numpy as np
import torch

from engine.features.types import Features
from engine.scoring.methods import get_method, score_in_shards

from ._helpers import np_blocks, rel_err


def gradcos_loop(train, test):
    """Cosine of the concatenated block gradients, one pair at a time."""
    Gs, Vs = np_blocks(train), np_blocks(test)
    S = np.zeros((test.n, train.n))
    for j in range(test.n):
        v = np.concatenate([V[j] for V in Vs])
        for i in range(train.n):
            g = np.concatenate([G[i] for G in Gs])
            S[j, i] = float(v @ g) / (np.linalg.norm(v) * np.linalg.norm(g))
    return S


def test_gradcos_matches_loop_and_is_bounded(feats):
    train, test = feats
    S = get_method("gradcos")(train, test)
    assert rel_err(S, gradcos_loop(train, test)) < 1e-12
    assert np.all(np.abs(S) <= 1 + 1e-12)


def test_gradcos_ignores_gradient_scale(feats):
    train, test = feats
    scaled = Features(grads=[g * torch.linspace(0.1, 10, g.shape[0])[:, None] for g in train.grads])
    # the scaling itself rounds in float32, hence 1e-6
    np.testing.assert_allclose(get_method("gradcos")(scaled, test), get_method("gradcos")(train, test), atol=1e-6)


def test_gradcos_shards_concatenate_and_zero_rows_score_zero(feats):
    train, test = feats
    zero = Features(grads=[torch.cat([g[:3], torch.zeros(1, g.shape[1]), g[4:]]) for g in train.grads])
    full = get_method("gradcos")(zero, test)
    assert np.all(full[:, 3] == 0)
    parts = np.concatenate([b for _, _, b in score_in_shards("gradcos", zero, test, 5)], axis=1)
    np.testing.assert_allclose(parts, full, atol=1e-12)
