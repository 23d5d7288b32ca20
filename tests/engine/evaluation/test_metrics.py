"""Metrics against hand-computed tiny examples and against plain Python loops on random matrices."""

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from engine.errors import InputError
from engine.evaluation import metrics as M

# --- hand-computed example -------------------------------------------------------------------------------
# train labels a a b b c (n=5), test labels a b c (m=3)
TRAIN = ["a", "a", "b", "b", "c"]
TEST = ["a", "b", "c"]
S = np.array(
    [
        [0.9, 0.1, 0.8, 0.2, 0.0],  # ranking 0 2 3 1 4 -> labels a b b a c (relevant: ranks 1, 4)
        [0.5, 0.5, 0.1, 0.7, 0.5],  # ranking 3 0 1 4 2 (tie 0/1/4 -> index order) -> b a a c b (ranks 1, 5)
        [1.0, 1.0, 1.0, 1.0, 1.0],  # constant: ranking 0 1 2 3 4 -> a a b b c (rank 5)
    ]
)


def test_hand_acc_and_ranking():
    assert M.ranking(S).tolist() == [[0, 2, 3, 1, 4], [3, 0, 1, 4, 2], [0, 1, 2, 3, 4]]
    assert M.acc_at_1(S, TRAIN, TEST) == pytest.approx(2 / 3)


def test_hand_coverage():
    # k=2: row0 {a,b} -> 1, row1 {b,a} -> 1, row2 {a,a} -> 0  => 2 / (3*2)
    assert M.coverage_at_k(S, TRAIN, TEST, 2) == pytest.approx(1 / 3)
    assert M.coverage_at_k(S, TRAIN, TEST, 5) == pytest.approx((2 + 2 + 1) / 15)
    assert M.paper_k(TRAIN) == 1  # floor(5 / 3)


def test_hand_best_and_chance():
    # k=2: a has 2 train -> 1, b has 2 -> 1, c has 1 -> 1/2   => 2.5 / 3
    assert M.best_coverage(TRAIN, TEST, 2) == pytest.approx(2.5 / 3)
    assert M.best_coverage(TRAIN, TEST, 1) == 1.0
    # a: 2/5, b: 2/5, c: 1/5 => 1/3
    assert M.chance_acc(TRAIN, TEST) == pytest.approx(1 / 3)
    assert M.chance_coverage(TRAIN, TEST) == pytest.approx(1 / 3)


def test_hand_auprc():
    # row0 relevant at ranks 1, 4: (1/1 + 2/4)/2 = 0.75; row1 at 1, 5: (1 + 2/5)/2 = 0.7; row2 at 5: 1/5
    np.testing.assert_allclose(M.auprc_per_test(S, TRAIN, TEST), [0.75, 0.7, 0.2])
    assert M.auprc(S, TRAIN, TEST) == pytest.approx(0.55)


def test_hand_auprc_no_positive_is_nan():
    ap = M.auprc_per_test(S, TRAIN, ["a", "b", "zzz"])
    assert np.isnan(ap[2]) and ap[0] == pytest.approx(0.75)
    assert M.auprc(S, TRAIN, ["a", "b", "zzz"]) == pytest.approx(0.725)


def test_hand_per_label_and_distinct():
    assert M.per_label(S, TRAIN, TEST, 2) == [
        {"label": "a", "n_test": 1, "acc": 1.0, "coverage": 0.5},
        {"label": "b", "n_test": 1, "acc": 1.0, "coverage": 0.5},
        {"label": "c", "n_test": 1, "acc": 0.0, "coverage": 0.0},
    ]
    assert M.n_distinct_top1(S) == 2  # top-1s: 0, 3, 0


def test_hand_summarize():
    out = M.summarize(S, TRAIN, TEST)
    assert set(out) == {
        "acc", "coverage", "auprc", "chance_acc", "chance_coverage", "best_coverage", "n_distinct_top1", "k",
        "acc_lo", "acc_hi", "coverage_lo", "coverage_hi",  # bootstrap intervals (test_bootstrap_* below)
    }
    assert out["k"] == 1
    assert out["acc"] == pytest.approx(2 / 3) and out["coverage"] == pytest.approx(2 / 3)
    assert out["auprc"] == pytest.approx(0.55) and out["best_coverage"] == 1.0
    assert out["chance_acc"] == pytest.approx(1 / 3) and out["n_distinct_top1"] == 2
    assert M.summarize(S, TRAIN, TEST, k=2)["best_coverage"] == pytest.approx(2.5 / 3)


def test_hand_agreement():
    A = np.array([[3.0, 2, 1, 0], [1, 2, 3, 4], [1, 1, 1, 1]])
    B = np.array([[0.0, 1, 2, 3], [10, 20, 30, 40], [5, 5, 5, 5]])
    out = M.agreement(A, B, 2)
    # spearman: -1, +1, constant row left out -> 0; overlap: {0,1}v{3,2}=0, {3,2}v{3,2}=1, {0,1}v{0,1}=1
    assert out["spearman"] == pytest.approx(0.0)
    assert out["overlap"] == pytest.approx(2 / 3)
    np.testing.assert_allclose(out["spearman_per_test"], [-1.0, 1.0, np.nan])
    np.testing.assert_allclose(out["overlap_per_test"], [0.0, 1.0, 1.0])


def test_hand_spearman_with_ties():
    # ranks a = 1 2.5 2.5 4, b = 1 2 3 4: 4.5 / sqrt(4.5 * 5)
    out = M.agreement([[1.0, 2, 2, 3]], [[1.0, 2, 3, 4]], 1)
    assert out["spearman"] == pytest.approx(4.5 / math.sqrt(22.5))
    assert out["overlap"] == 1.0


def test_nan_scores_rank_last():
    assert M.ranking([[np.nan, 0.0, 1.0]]).tolist() == [[2, 1, 0]]
    assert M.ranking([[np.nan, -np.inf, 1.0, np.nan]]).tolist() == [[2, 1, 0, 3]]
    out = M.agreement([[1.0, np.nan, 3.0], [1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], 1)
    assert out["spearman"] == pytest.approx(-1.0)  # the row with NaN is left out


def test_bad_inputs():
    with pytest.raises(InputError, match="does not match"):
        M.acc_at_1(S, TRAIN[:4], TEST)
    with pytest.raises(InputError, match="k must"):
        M.coverage_at_k(S, TRAIN, TEST, 0)
    with pytest.raises(InputError, match="k must"):
        M.coverage_at_k(S, TRAIN, TEST, 6)
    with pytest.raises(InputError, match="same shape"):
        M.agreement(S, S[:2], 1)
    with pytest.raises(InputError, match="2-D"):
        M.n_distinct_top1(np.zeros(3))


# --- loop references on random matrices ------------------------------------------------------------------


def loop_rank(row):
    return sorted(range(len(row)), key=lambda i: (-row[i], i))


def loop_metrics(S, tr, te, k):
    m, n = S.shape
    acc = cov = 0
    aps, best, chance, top1 = [], [], [], set()
    for j in range(m):
        order = loop_rank(S[j])
        top1.add(order[0])
        acc += tr[order[0]] == te[j]
        cov += sum(tr[i] == te[j] for i in order[:k])
        hits, precs = 0, []
        for r, i in enumerate(order, start=1):
            if tr[i] == te[j]:
                hits += 1
                precs.append(hits / r)
        aps.append(sum(precs) / len(precs) if precs else float("nan"))
        n_same = sum(t == te[j] for t in tr)
        best.append(min(k, n_same) / k)
        chance.append(n_same / n)
    return {
        "acc": acc / m,
        "coverage": cov / (m * k),
        "auprc": float(np.nanmean(aps)),
        "aps": aps,
        "best_coverage": sum(best) / m,
        "chance_acc": sum(chance) / m,
        "n_distinct_top1": len(top1),
    }


@pytest.mark.parametrize("seed", range(5))
def test_random_against_loops(seed):
    rng = np.random.default_rng(seed)
    n, m = 30, 9
    labels = ["x", "y", "z", "w"]
    tr = [labels[i] for i in rng.choice(4, size=n, p=[0.5, 0.3, 0.15, 0.05])]
    te = [labels[i] for i in rng.integers(0, 4, size=m)]
    S = np.round(rng.normal(size=(m, n)), 1)  # rounding makes ties, exercising the tie rule
    k = M.paper_k(tr) if seed % 2 else 7
    ref = loop_metrics(S, tr, te, k)
    out = M.summarize(S, tr, te, k=k)
    for key in ("acc", "coverage", "auprc", "best_coverage", "chance_acc", "n_distinct_top1"):
        assert out[key] == pytest.approx(ref[key], rel=1e-12, nan_ok=True), key
    np.testing.assert_allclose(M.auprc_per_test(S, tr, te), ref["aps"], rtol=1e-12)
    # per label re-aggregates to the totals
    rows = M.per_label(S, tr, te, k)
    assert sum(r["n_test"] for r in rows) == m
    assert sum(r["acc"] * r["n_test"] for r in rows) / m == pytest.approx(out["acc"])
    assert sum(r["coverage"] * r["n_test"] for r in rows) / m == pytest.approx(out["coverage"])


@pytest.mark.parametrize("seed", range(3))
def test_random_agreement_against_scipy_and_loops(seed):
    rng = np.random.default_rng(100 + seed)
    A = np.round(rng.normal(size=(6, 25)), 1)
    B = A + rng.normal(scale=0.5, size=A.shape)
    k = 5
    out = M.agreement(A, B, k)
    rhos = [spearmanr(a, b).statistic for a, b in zip(A, B)]
    assert out["spearman"] == pytest.approx(np.mean(rhos), rel=1e-12)
    overlaps = [len(set(loop_rank(a)[:k]) & set(loop_rank(b)[:k])) / k for a, b in zip(A, B)]
    assert out["overlap"] == pytest.approx(np.mean(overlaps), rel=1e-12)
    np.testing.assert_allclose(out["spearman_per_test"], rhos, rtol=1e-12)  # the per-test values behind the means
    np.testing.assert_allclose(out["overlap_per_test"], overlaps, rtol=1e-12)


def test_chance_matches_random_rankings_on_average():
    rng = np.random.default_rng(7)
    tr = list("aaaaabbbcc")
    te = list("abcab")
    accs, covs = [], []
    for _ in range(4000):
        R = rng.random((len(te), len(tr)))
        accs.append(M.acc_at_1(R, tr, te))
        covs.append(M.coverage_at_k(R, tr, te, 3))
    chance = M.chance_acc(tr, te)
    assert np.mean(accs) == pytest.approx(chance, abs=0.01)
    assert np.mean(covs) == pytest.approx(M.chance_coverage(tr, te, 3), abs=0.01)


# --- bootstrap intervals ----------------------------------------------------------------------------------


def _loop_bootstrap(values, resamples, level, seed):
    """The percentile bootstrap written out: draw n indices with replacement, take the mean, repeat; quantiles."""
    rng = np.random.default_rng(seed)
    x = np.asarray(values, float)
    means = sorted(float(np.mean([x[i] for i in rng.integers(0, len(x), size=len(x))])) for _ in range(resamples))
    return tuple(np.quantile(means, [(1 - level) / 2, (1 + level) / 2]))


def test_bootstrap_interval_equals_the_written_out_loop():
    x = np.random.default_rng(1).random(37)
    assert M.bootstrap_ci(x, resamples=300, seed=4) == pytest.approx(_loop_bootstrap(x, 300, 0.95, 4), rel=1e-12)
    lo, hi = M.bootstrap_ci(x)
    assert lo < x.mean() < hi
    assert M.bootstrap_ci([0.5] * 9) == (0.5, 0.5)
    assert all(math.isnan(v) for v in M.bootstrap_ci([]))


def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = sum(lo <= 0.3 <= hi for lo, hi in (M.bootstrap_ci(rng.random(120) < 0.3, resamples=400, seed=t)
                                              for t in range(300)))
    assert 0.88 <= hits / 300 <= 0.99  # a percentile bootstrap at n = 120: close to its nominal 95 %


def test_paired_interval_is_the_interval_of_the_differences():
    rng = np.random.default_rng(2)
    a, b = rng.random(50), rng.random(50)
    assert M.paired_bootstrap_ci(a, b, seed=3) == M.bootstrap_ci(a - b, seed=3)
    with pytest.raises(InputError, match="same test samples"):
        M.paired_bootstrap_ci(a, b[:-1])


def test_per_test_hits_and_summary_intervals_against_a_loop():
    rng = np.random.default_rng(5)
    tr = [str(x) for x in rng.integers(0, 3, 20)]
    te = [str(x) for x in rng.integers(0, 3, 12)]
    Sm = rng.normal(size=(12, 20))
    top1, hits = M.per_test_hits(Sm, tr, te, 4)
    for j in range(12):
        order = sorted(range(20), key=lambda i: (-Sm[j, i], i))
        assert top1[j] == (tr[order[0]] == te[j]) and hits[j] == sum(tr[i] == te[j] for i in order[:4])
    row = M.summarize(Sm, tr, te, k=4)
    assert (row["acc_lo"], row["acc_hi"]) == M.bootstrap_ci(top1.astype(float))
    assert (row["coverage_lo"], row["coverage_hi"]) == M.bootstrap_ci(hits / 4)
    assert row["acc_lo"] <= row["acc"] <= row["acc_hi"]


def test_metrics_in_row_chunks_equal_one_chunk(monkeypatch):
    """Rows are ranked a few at a time (bounded memory at any n_train): the results do not depend on it."""
    rng = np.random.default_rng(7)
    tr = [str(x) for x in rng.integers(0, 4, 300)]
    te = [str(x) for x in rng.integers(0, 4, 25)]
    A, B = np.round(rng.normal(size=(25, 300)), 1), rng.normal(size=(25, 300))  # rounding: ties
    A[3, 5] = np.nan
    whole = (M.summarize_with_labels(A, tr, te, 7), M.agreement(A, B, 7), M.top_k_rows(A, 7).tolist(),
             M.n_distinct_top1(A))
    monkeypatch.setattr(M, "_CHUNK_ELEMENTS", 300 * 2)  # two rows per chunk
    chunked = (M.summarize_with_labels(A, tr, te, 7), M.agreement(A, B, 7), M.top_k_rows(A, 7).tolist(),
               M.n_distinct_top1(A))
    plain = lambda t: (t[0], {k: np.asarray(v).tolist() for k, v in t[1].items()}, *t[2:])  # noqa: E731
    np.testing.assert_equal(plain(chunked), plain(whole))
