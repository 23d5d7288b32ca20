import numpy as np
import pytest

from engine.errors import InputError
from engine.features.types import Features
from engine.scoring.methods import get_method, score_in_shards

from ._helpers import make_features, np_blocks, rel_err


def _with_history(weights, seeds):
    """Train/test Features whose history holds one random gradient set per checkpoint."""
    tr_hist, te_hist = [], []
    for w, seed in zip(weights, seeds):
        tr, te = make_features(seed)
        tr_hist.append((w, tr.grads))
        te_hist.append((w, te.grads))
    last_tr, last_te = tr_hist[-1][1], te_hist[-1][1]
    return Features(grads=last_tr, history=tuple(tr_hist)), Features(grads=last_te, history=tuple(te_hist))


def tracin_loop(train, test):
    """sum over checkpoints of lr * sum over blocks of <v, g>, one pair at a time."""
    S = np.zeros((test.n, train.n))
    for (w, tr_g), (_, te_g) in zip(train.history, test.history):
        Gs, Vs = np_blocks(Features(grads=tr_g)), np_blocks(Features(grads=te_g))
        for j in range(test.n):
            for i in range(train.n):
                S[j, i] += w * sum(float(V[j] @ G[i]) for G, V in zip(Gs, Vs))
    return S


def test_tracin_matches_loop_and_shards():
    train, test = _with_history([1e-3, 5e-4, 1e-4], [1, 2, 3])
    S = get_method("tracin")(train, test)
    assert rel_err(S, tracin_loop(train, test)) < 1e-12
    parts = np.concatenate([b for _, _, b in score_in_shards("tracin", train, test, 5)], axis=1)
    np.testing.assert_allclose(parts, S, rtol=1e-12, atol=1e-15)


def test_tracin_single_checkpoint_is_scaled_gradsim():
    train, test = _with_history([0.01], [4])
    np.testing.assert_allclose(get_method("tracin")(train, test), 0.01 * get_method("gradsim")(train, test),
                               rtol=1e-12)


def test_tracin_without_history_is_a_clear_error():
    train, test = make_features(0)
    with pytest.raises(InputError, match="history"):
        get_method("tracin")(Features(grads=train.grads), Features(grads=test.grads))
