"""The linear datamodeling score against the formula: explicit rank loops, a predictor of known imperfection."""

import numpy as np
import pytest

from engine.analysis.lds import kept_score_sums, lds, lds_per_test, lds_subsets


def spearman_formula(x, y) -> float:
    """1 - 6 Σ d² / (M (M² - 1)) for data without ties, ranks by explicit counting."""
    M = len(x)
    rx = [sum(v < x[i] for v in x) for i in range(M)]
    ry = [sum(v < y[i] for v in y) for i in range(M)]
    return 1 - 6 * sum((a - b) ** 2 for a, b in zip(rx, ry)) / (M * (M * M - 1))


def test_subsets_keep_alpha_of_the_set_and_differ():
    subs = lds_subsets(20, 0.5, 6, seed=3)
    assert all(len(r) == 10 and len(set(r)) == 10 and list(r) == sorted(r) for r in subs)
    assert len(set(subs)) == 6
    assert lds_subsets(20, 0.5, 6, seed=3) == subs and lds_subsets(20, 0.5, 6, seed=4) != subs
    assert all(len(r) == 15 for r in lds_subsets(20, 0.25, 2, seed=0))


def test_kept_score_sums_are_sums_over_the_kept_samples():
    rng = np.random.default_rng(0)
    S = rng.normal(size=(3, 8))
    removed = [(0, 1, 2), (5,), ()]
    g = kept_score_sums(S, removed)
    for k, r in enumerate(removed):
        for j in range(3):
            assert g[j, k] == pytest.approx(sum(S[j, i] for i in range(8) if i not in r))


def test_a_known_imperfect_predictor():
    """Per test sample the actual losses order the subsets as the prediction does except for one swapped pair
    (test 0) or two (test 1): Spearman = 1 - 6·2/(M(M²-1)) and 1 - 6·4/(M(M²-1)), averaged."""
    M = 7
    pred = np.array([np.arange(M, dtype=float), np.arange(M, dtype=float) * 2 + 1])
    # loss = -prediction order, with adjacent swaps (a better prediction = a lower loss)
    order0 = [0, 1, 2, 4, 3, 5, 6]
    order1 = [1, 0, 2, 3, 4, 6, 5]
    loss = -np.array([np.array(order0, float), np.array(order1, float)])
    want0, want1 = 1 - 12 / (M * (M * M - 1)), 1 - 24 / (M * (M * M - 1))
    assert spearman_formula(pred[0], -loss[0]) == pytest.approx(want0)
    assert spearman_formula(pred[1], -loss[1]) == pytest.approx(want1)
    np.testing.assert_allclose(lds_per_test(pred, loss), [want0, want1])
    r = lds(pred, loss, n_boot=500, seed=1)
    assert r["lds"] == pytest.approx((want0 + want1) / 2) and r["n_test"] == 2
    assert r["lo"] <= r["lds"] <= r["hi"] <= 1
    assert lds(-pred, loss, n_boot=10)["lds"] == pytest.approx(-(want0 + want1) / 2)  # the opposite predictor


def test_interval_narrows_with_more_subsets_and_is_reproducible():
    rng = np.random.default_rng(0)

    def sample(M):
        pred = rng.normal(size=(30, M))
        loss = -(pred + 1.0 * rng.normal(size=(30, M)))  # signal + as much noise
        return pred, loss

    few, many = lds(*sample(5), n_boot=400), lds(*sample(80), n_boot=400)
    assert (many["hi"] - many["lo"]) < (few["hi"] - few["lo"])
    assert 0.5 < many["lds"] < 0.85 and many["lo"] < many["lds"] < many["hi"]
    p, l_ = sample(10)
    assert lds(p, l_, n_boot=50, seed=2) == lds(p, l_, n_boot=50, seed=2)


def test_undefined_rows_are_left_out():
    pred = np.array([[1.0, 2, 3, 4], [1.0, 1, 1, 1]])  # the second prediction is constant
    loss = -np.array([[1.0, 2, 3, 4], [4.0, 3, 2, 1]])
    r = lds(pred, loss, n_boot=20)
    assert r["lds"] == pytest.approx(1.0) and r["n_test"] == 1
    assert np.isnan(lds(pred[1:], loss[1:], n_boot=5)["lds"])
