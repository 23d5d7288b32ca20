"""Metrics of a score matrix against class labels (numpy only).

Inputs everywhere: ``S`` float ``[n_test, n_train]`` with ``S[j, i]`` LARGER when training sample ``i`` is MORE
responsible for test sample ``j`` (the package's sign convention; the paper's IF is ``-S``), and the labels of the
training and test samples as sequences of str. A training sample is "relevant" to a test sample when their
labels are equal.

Ranking rule (used by every metric): per test sample, training samples are ordered by score descending; ties
are broken by the LOWER training index first (a stable sort of ``-S``), and NaN scores rank last. So every
metric is deterministic, and a constant row ranks training samples in index order.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.stats import rankdata

from engine.errors import InputError

__all__ = [
    "ranking",
    "acc_at_1",
    "coverage_at_k",
    "paper_k",
    "best_coverage",
    "chance_acc",
    "chance_coverage",
    "auprc_per_test",
    "auprc",
    "per_label",
    "n_distinct_top1",
    "spearman",
    "spearman_rows",
    "top_k_rows",
    "topk_counts",
    "agreement",
    "per_test_hits",
    "bootstrap_ci",
    "paired_bootstrap_ci",
    "summarize",
    "summarize_with_labels",
]


# ----------------------------------------------------------------------------------------------- helpers


def _matrix(S) -> np.ndarray:
    S = np.asarray(S, dtype=np.float64)
    if S.ndim != 2 or S.shape[0] == 0 or S.shape[1] == 0:
        raise InputError(f"score matrix must be 2-D [n_test, n_train] and non-empty, got shape {S.shape}")
    return S


def _labels(labels, what: str) -> np.ndarray:
    arr = np.asarray([str(x) for x in labels], dtype=object)
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"{what} labels must be a non-empty sequence of str")
    return arr


def _check(S, train_labels, test_labels):
    S = _matrix(S)
    tr, te = _labels(train_labels, "train"), _labels(test_labels, "test")
    if S.shape != (te.size, tr.size):
        raise InputError(
            f"score matrix shape {S.shape} does not match {te.size} test labels x {tr.size} train labels"
        )
    return S, tr, te


def _k(k, n_train: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n_train:
        raise InputError(f"k must be an integer in 1..{n_train} (the number of training samples), got {k!r}")
    return int(k)


def _same(tr: np.ndarray, te: np.ndarray) -> np.ndarray:
    """[n_test, n_train] bool: train label == test label."""
    return te[:, None] == tr[None, :]


def ranking(S) -> np.ndarray:
    """Training indices per test sample, best first: ``[n_test, n_train]`` int.

    Score descending; ties -> lower training index first; NaN last.
    """
    S = _matrix(S)
    nan = np.isnan(S)
    key = np.where(nan, 0.0, -S)
    # lexsort: last key is primary (NaN flag), then -S; equal keys keep index order (it is a stable sort)
    return np.lexsort((key, nan), axis=1)


def _ranked_same(S, tr, te) -> np.ndarray:
    """[n_test, n_train] bool: is the r-th ranked training sample relevant to test sample j."""
    order = ranking(S)
    return np.take_along_axis(_same(tr, te), order, axis=1)


_CHUNK_ELEMENTS = 1 << 21  # rows of S are ranked this many scores at a time: bounded memory for any n_train


def _row_chunks(n_rows: int, n_cols: int):
    step = max(1, _CHUNK_ELEMENTS // max(n_cols, 1))
    for a in range(0, n_rows, step):
        yield slice(a, min(a + step, n_rows))


def _per_test(S: np.ndarray, tr: np.ndarray, te: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Everything the headline metrics need, per test sample [n_test], from one ranking of each row (ranked in
    chunks of rows): ``top1`` (index of the best training sample), ``top1_same``, ``hits`` (same-label samples
    among the top k) and ``ap`` (average precision; NaN without any positive)."""
    m, n = S.shape
    out = {"top1": np.empty(m, np.int64), "top1_same": np.empty(m, bool), "hits": np.empty(m, np.int64),
           "ap": np.empty(m)}
    ranks = np.arange(1, n + 1)[None, :]
    for rows in _row_chunks(m, n):
        order = ranking(S[rows])
        rel = np.take_along_axis(_same(tr, te[rows]), order, axis=1)
        out["top1"][rows], out["top1_same"][rows] = order[:, 0], rel[:, 0]
        out["hits"][rows] = rel[:, :k].sum(axis=1)
        n_pos = rel.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ap = np.where(rel, np.cumsum(rel, axis=1) / ranks, 0.0).sum(axis=1) / n_pos
        out["ap"][rows] = np.where(n_pos > 0, ap, np.nan)
    return out


# ----------------------------------------------------------------------------------------------- metrics


def acc_at_1(S, train_labels: Sequence[str], test_labels: Sequence[str]) -> float:
    """Share of test samples whose top-ranked training sample has the same label (ties: lowest index)."""
    S, tr, te = _check(S, train_labels, test_labels)
    return float(_per_test(S, tr, te, 1)["top1_same"].mean())


def coverage_at_k(S, train_labels: Sequence[str], test_labels: Sequence[str], k: int) -> float:
    """``sum_test #{same-label among the top k} / (n_test * k)`` (ties: lowest index)."""
    S, tr, te = _check(S, train_labels, test_labels)
    k = _k(k, tr.size)
    return float(_per_test(S, tr, te, k)["hits"].sum() / (te.size * k))


def paper_k(train_labels: Sequence[str]) -> int:
    """The paper's k: ``floor(n_train / n_distinct_train_labels)``."""
    tr = _labels(train_labels, "train")
    return int(tr.size // len(set(tr.tolist())))


def best_coverage(train_labels: Sequence[str], test_labels: Sequence[str], k: int) -> float:
    """Largest achievable Coverage@k: mean over test of ``min(k, #same-label train) / k``.

    Below 1 when some test label has fewer than k training samples (imbalanced mixes).
    """
    tr, te = _labels(train_labels, "train"), _labels(test_labels, "test")
    k = _k(k, tr.size)
    counts = _same(tr, te).sum(axis=1)
    return float(np.mean(np.minimum(k, counts) / k))


def chance_acc(train_labels: Sequence[str], test_labels: Sequence[str]) -> float:
    """Expected Acc@1 of a uniformly random ranking: mean over test of (#same-label train / n_train)."""
    tr, te = _labels(train_labels, "train"), _labels(test_labels, "test")
    return float(_same(tr, te).mean(axis=1).mean())


def chance_coverage(train_labels: Sequence[str], test_labels: Sequence[str], k: int | None = None) -> float:
    """Expected Coverage@k of a uniformly random ranking; equals :func:`chance_acc` for every k
    (the top k of a random ranking hold k * p relevant samples in expectation). ``k`` is only validated."""
    if k is not None:
        _k(k, _labels(train_labels, "train").size)
    return chance_acc(train_labels, test_labels)


def auprc_per_test(S, train_labels: Sequence[str], test_labels: Sequence[str]) -> np.ndarray:
    """Average precision per test sample, same-label training samples = positives: ``[n_test]`` float.

    AP = mean over the positives of (precision at that positive's rank), with the ranking rule of this module.
    NaN for a test sample without any positive.
    """
    S, tr, te = _check(S, train_labels, test_labels)
    return _per_test(S, tr, te, 1)["ap"]


def auprc(S, train_labels: Sequence[str], test_labels: Sequence[str]) -> float:
    """Mean of :func:`auprc_per_test` over test samples that have at least one positive (NaN if none has)."""
    return _nanmean(auprc_per_test(S, train_labels, test_labels))


def _nanmean(ap: np.ndarray) -> float:
    return float(np.nanmean(ap)) if np.any(~np.isnan(ap)) else float("nan")


def per_label(S, train_labels: Sequence[str], test_labels: Sequence[str], k: int) -> list[dict]:
    """Per test label (sorted): ``{label, n_test, acc, coverage}`` over the test samples with that label."""
    S, tr, te = _check(S, train_labels, test_labels)
    k = _k(k, tr.size)
    return _per_label(_per_test(S, tr, te, k), te, k)


def _per_label(pt: dict, te: np.ndarray, k: int) -> list[dict]:
    out = []
    for label in sorted(set(te.tolist())):
        rows = te == label
        out.append({"label": label, "n_test": int(rows.sum()), "acc": float(pt["top1_same"][rows].mean()),
                    "coverage": float(pt["hits"][rows].sum() / (rows.sum() * k))})
    return out


def n_distinct_top1(S) -> int:
    """How many different training samples are ranked first for some test sample."""
    S = _matrix(S)
    return int(np.unique(np.concatenate([ranking(S[rows])[:, 0] for rows in _row_chunks(*S.shape)])).size)


def spearman(x, y) -> float:
    """Spearman rank correlation of two 1-D arrays: the Pearson correlation of their average ranks (ties share
    the mean rank). NaN when either array holds a NaN (a missing score leaves the ranking undefined), has fewer
    than two values, or is constant. The one Spearman of the package (see :func:`spearman_rows`)."""
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise InputError(f"spearman needs two arrays of the same length, got {x.size} and {y.size}")
    return float(spearman_rows(x[None, :], y[None, :])[0])


def spearman_rows(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Per-row Spearman correlation of two ``[m, n]`` arrays -> ``[m]``, with :func:`spearman`'s rules (a row
    with a NaN in either array, fewer than two columns or a constant side is NaN)."""
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    if A.shape != B.shape or A.ndim != 2:
        raise InputError(f"spearman_rows needs two 2-D arrays of the same shape, got {A.shape} and {B.shape}")
    out = np.full(A.shape[0], np.nan)
    clean = ~(np.isnan(A) | np.isnan(B)).any(axis=1)
    if clean.any() and A.shape[1] >= 2:
        out[clean] = _pearson_of_ranks(A[clean], B[clean])
    return out


def _pearson_of_ranks(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    ra = rankdata(A, method="average", axis=1)
    rb = rankdata(B, method="average", axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    num = (ra * rb).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def top_k_rows(S, k: int) -> np.ndarray:
    """The ``k`` best training indices per test row (``[n_test, k]``), by :func:`ranking`'s rule."""
    S = _matrix(S)
    k = max(1, min(int(k), S.shape[1]))
    return np.concatenate([ranking(S[rows])[:, :k] for rows in _row_chunks(*S.shape)])


def topk_counts(S, k: int) -> np.ndarray:
    """For every training sample (column of ``S``), in how many test rows it is among the ``k`` best
    (:func:`ranking`'s rule) -> int64 ``[n_train]``."""
    S = _matrix(S)
    return np.bincount(top_k_rows(S, k).ravel(), minlength=S.shape[1]).astype(np.int64)


def agreement(S_a, S_b, k: int) -> dict:
    """How much two methods agree, per test sample and averaged over test samples.

    spearman_per_test: ``[n_test]`` :func:`spearman_rows` of the two matrices (NaN for a row without a defined
      correlation: a NaN score, a constant row).
    overlap_per_test: ``[n_test]`` ``|top-k of a  intersect  top-k of b| / k`` (ranking rule of this module).
    spearman: mean of spearman_per_test, undefined rows left out (NaN when every row is); overlap: mean of
      overlap_per_test.
    """
    A, B = _matrix(S_a), _matrix(S_b)
    if A.shape != B.shape:
        raise InputError(f"score matrices must have the same shape, got {A.shape} and {B.shape}")
    k = _k(k, A.shape[1])
    rhos = np.concatenate([spearman_rows(A[rows], B[rows]) for rows in _row_chunks(*A.shape)])
    spearman = float(np.nanmean(rhos)) if np.any(~np.isnan(rhos)) else float("nan")
    ta, tb = top_k_rows(A, k), top_k_rows(B, k)
    overlaps = np.array([np.intersect1d(x, y).size / k for x, y in zip(ta, tb)])
    return {"spearman": spearman, "overlap": float(overlaps.mean()), "spearman_per_test": rhos,
            "overlap_per_test": overlaps}


def per_test_hits(S, train_labels: Sequence[str], test_labels: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per test sample: whether its top-1 training sample has its label (``[n_test]`` bool) and how many of its
    top ``k`` do (``[n_test]`` int). Acc@1 and Coverage@k are their means (the latter divided by k)."""
    S, tr, te = _check(S, train_labels, test_labels)
    pt = _per_test(S, tr, te, _k(k, tr.size))
    return pt["top1_same"], pt["hits"]


BOOTSTRAP_RESAMPLES = 2000
CI_LEVEL = 0.95


def bootstrap_ci(values, *, resamples: int = BOOTSTRAP_RESAMPLES, level: float = CI_LEVEL,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one per test sample): ``resamples`` means of
    samples drawn with replacement (seeded, so the same values give the same interval), and their
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles. (NaN, NaN) for no values. The interval says how much
    the metric would move on another draw of test prompts of the same kind."""
    return paired_bootstrap_ci(values, None, resamples=resamples, level=level, seed=seed)


def paired_bootstrap_ci(a, b=None, *, resamples: int = BOOTSTRAP_RESAMPLES, level: float = CI_LEVEL,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(a - b)`` over the same test samples, resampled together (so
    two methods judged on the same prompts are compared prompt by prompt); ``b=None`` is :func:`bootstrap_ci`.
    A difference whose interval contains 0 is within the noise of the test set."""
    x = np.asarray(a, dtype=np.float64).ravel()
    if b is not None:
        y = np.asarray(b, dtype=np.float64).ravel()
        if y.shape != x.shape:
            raise InputError(f"paired bootstrap needs values for the same test samples, got {x.size} and {y.size}")
        x = x - y
    if x.size == 0:
        return float("nan"), float("nan")
    if not 0 < level < 1 or resamples < 1:
        raise InputError(f"bootstrap needs 0 < level < 1 and resamples >= 1, got {level!r}, {resamples!r}")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    step = max(1, (1 << 22) // x.size)  # resamples per chunk: bounded memory for large test sets
    for start in range(0, resamples, step):
        stop = min(start + step, resamples)
        means[start:stop] = x[rng.integers(0, x.size, size=(stop - start, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def summarize(S, train_labels: Sequence[str], test_labels: Sequence[str], k: int | None = None) -> dict:
    """All headline metrics of one score matrix; ``k=None`` -> :func:`paper_k`.

    Keys: acc, coverage, acc_lo/acc_hi and coverage_lo/coverage_hi (95 % bootstrap intervals over test samples,
    :func:`bootstrap_ci`), auprc, chance_acc, chance_coverage, best_coverage, n_distinct_top1, k.
    """
    return summarize_with_labels(S, train_labels, test_labels, k)[0]


def summarize_with_labels(S, train_labels: Sequence[str], test_labels: Sequence[str],
                          k: int | None = None) -> tuple[dict, list[dict]]:
    """``(summarize(...), per_label(...))`` from one ranking of the matrix."""
    S, tr, te = _check(S, train_labels, test_labels)
    k = paper_k(tr) if k is None else _k(k, tr.size)
    pt = _per_test(S, tr, te, k)
    top1, hits = pt["top1_same"], pt["hits"]
    acc_ci, cov_ci = bootstrap_ci(top1), bootstrap_ci(hits / k)
    return {
        "acc": float(top1.mean()),
        "coverage": float(hits.sum() / (te.size * k)),
        "acc_lo": acc_ci[0], "acc_hi": acc_ci[1], "coverage_lo": cov_ci[0], "coverage_hi": cov_ci[1],
        "auprc": _nanmean(pt["ap"]),
        "chance_acc": chance_acc(tr, te),
        "chance_coverage": chance_coverage(tr, te),
        "best_coverage": best_coverage(tr, te, k),
        "n_distinct_top1": int(np.unique(pt["top1"]).size),
        "k": k,
    }, _per_label(pt, te, k)
