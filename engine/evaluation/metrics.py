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

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from engine.errors import InputError

__all__ = [
    "ranking",
    "acc_at_1",
    "coverage_at_k",
    "paper_k",
    "has_labels",
    "default_k",
    "UNLABELLED_K",
    "LABEL_METRICS",
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
    "agreement_summary",
    "RankedRows",
    "rank_rows",
    "rank_spread",
    "spearman_of_ranks",
    "summary_of",
    "per_label_of",
    "row_chunks",
    "overlap_from_bits",
    "per_test_hits",
    "bootstrap_ci",
    "paired_bootstrap_ci",
    "summarize",
    "summarize_with_labels",
    "unstable_methods",
]


# ----------------------------------------------------------------------------------------------- helpers


def _matrix(S) -> np.ndarray:
    """``S`` as a 2-D float array; float32 stays float32 (its order is the same in float64, and a copy of a
    large score matrix is what bounded memory cannot afford)."""
    S = np.asarray(S)
    if S.dtype != np.float32:
        S = S.astype(np.float64, copy=False)
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
    """[n_test, n_train] bool: train label == test label (label arrays or their :func:`_codes`)."""
    return te[:, None] == tr[None, :]


def _codes(tr: np.ndarray, te: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The labels as small ints, equal where the labels are: comparing ints, not Python strings, is what keeps
    the label tests cheap at n_train = 100k."""
    _, inverse = np.unique(np.concatenate([tr, te]).astype(str), return_inverse=True)
    return inverse[: tr.size], inverse[tr.size:]


def _label_counts(tr: np.ndarray, te: np.ndarray) -> np.ndarray:
    """[n_test] int: how many training samples share each test sample's label."""
    a, b = _codes(tr, te)
    return np.bincount(a, minlength=max(a.max(initial=0), b.max(initial=0)) + 1)[b]


def ranking(S) -> np.ndarray:
    """Training indices per test sample, best first: ``[n_test, n_train]`` int.

    Score descending; ties -> lower training index first; NaN last.
    """
    return _order(_matrix(S))


def _order(S: np.ndarray) -> np.ndarray:
    # a stable sort of -S is the whole rule: equal keys keep index order, and numpy sorts NaN to the end
    return np.argsort(-S, axis=1, kind="stable")


_CHUNK_ELEMENTS = 1 << 19  # rows of S are ranked this many scores at a time: bounded memory for any n_train
# (the sort and its companions hold ~12 arrays of a chunk's size: ~25 MB)


def row_chunks(n_rows: int, n_cols: int):
    step = max(1, _CHUNK_ELEMENTS // max(n_cols, 1))
    for a in range(0, n_rows, step):
        yield slice(a, min(a + step, n_rows))


def _average_ranks(S: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``[R, n]`` average ranks of each row of ``S`` (best = 1, the order of :func:`_order`); tied scores share
    the mean of their positions. float32 (exact: half-integers below 2**23), float64 for longer rows. A row with
    a NaN: NaN."""
    R, n = S.shape
    v = np.take_along_axis(S, order, axis=1)
    start = np.ones((R, n), bool)
    start[:, 1:] = v[:, 1:] != v[:, :-1]  # a new group of equal scores begins (every row begins one)
    group = np.cumsum(start.ravel()) - 1  # group number of every sorted position, over all rows
    pos = np.tile(np.arange(1, n + 1, dtype=np.float64), R)
    first = pos[start.ravel()]
    last = np.empty_like(first)
    last[:-1], last[-1] = pos[np.flatnonzero(start.ravel())[1:] - 1], pos[-1]
    dtype = np.float32 if n < 1 << 23 else np.float64  # float32 holds every half-integer below 2**23 exactly
    ranks = np.empty((R, n), dtype)
    np.put_along_axis(ranks, order, ((first + last) / 2)[group].reshape(R, n).astype(dtype), axis=1)
    ranks[np.isnan(S).any(axis=1)] = np.nan
    return ranks


def rank_spread(ranks: np.ndarray) -> np.ndarray:
    """``[R]`` float64: ``sum_i (rank_i - (n+1)/2)**2`` per row of average ranks (0 for a constant row; NaN for
    a row of NaN). The denominator of Spearman's rho (:func:`spearman_of_ranks`)."""
    c = (ranks.shape[1] + 1) / 2
    return ((ranks.astype(np.float64) - c) ** 2).sum(axis=1)


def spearman_of_ranks(ranks: np.ndarray, spreads: np.ndarray) -> np.ndarray:
    """Spearman's rho of every pair of ``M`` rankings, row by row: ``ranks`` ``[M, R, n]`` average ranks
    (:func:`_average_ranks`) and ``spreads`` ``[M, R]`` (:func:`rank_spread`) -> ``[R, M, M]``, the Pearson
    correlation of the ranks (whose mean is (n+1)/2 in every row). NaN where a spread is 0 (a constant row) or
    NaN (a row with a NaN score)."""
    c = (ranks.shape[2] + 1) / 2
    Z = (ranks.astype(np.float64) - c).transpose(1, 0, 2)  # [R, M, n]
    num = np.matmul(Z, Z.transpose(0, 2, 1))
    sp = spreads.T  # [R, M]
    den = np.sqrt(sp[:, :, None] * sp[:, None, :])  # sqrt of the product: exactly s for two equal rankings
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, num / den, np.nan)
    return np.clip(rho, -1.0, 1.0)  # a correlation: rounding of the square roots must not push it past +-1


@dataclass
class RankedRows:
    """One sort of every row of a score matrix ``[n_test, n_train]`` and what each metric and the method
    agreement read from it (all ``[n_test]`` unless said):

    top1 (int, index of the best training sample), top1_same (bool), hits (int: same-label samples among the
    top k), ap (float: average precision, NaN without a positive) — None without labels; topk_bits: ``[n_test,
    ceil(n_train / 8)]`` uint8, ``np.packbits`` of "is in the top k" per row; spread: :func:`rank_spread`.
    ``ranks`` (``[n_test, n_train]`` float32 average ranks) is kept only when asked: a caller that must bound
    memory receives them chunk by chunk instead (``on_ranks``)."""

    k: int
    top1: np.ndarray
    top1_same: np.ndarray | None
    hits: np.ndarray | None
    ap: np.ndarray | None
    topk_bits: np.ndarray
    spread: np.ndarray
    ranks: np.ndarray | None = None


def rank_rows(S, k: int, tr: np.ndarray | None = None, te: np.ndarray | None = None, *, keep_ranks: bool = False,
              on_ranks=None) -> RankedRows:
    """:class:`RankedRows` of ``S`` from one sort of each row, rows ranked a chunk at a time (memory: a few
    chunks, whatever n_train). ``tr``/``te``: label arrays for the label metrics (both or neither).
    ``on_ranks(rows, ranks)``: called with each chunk's average ranks (a ``slice`` of rows, ``[R, n]`` float32)."""
    S = _matrix(S)
    m, n = S.shape
    k = _k(k, n)
    labelled = tr is not None
    top1 = np.empty(m, np.int64)
    spread = np.empty(m)
    bits = np.empty((m, (n + 7) // 8), np.uint8)
    same1, hits, ap = (np.empty(m, bool), np.empty(m, np.int64), np.empty(m)) if labelled else (None, None, None)
    kept = None
    positions = np.arange(1, n + 1)[None, :]
    if labelled:
        S, tr, te = _check(S, tr, te)  # the matrix must be [n_test, n_train] of these labels
        tr, te = _codes(tr, te)
    for rows in row_chunks(m, n):
        block = S[rows]
        order = _order(block)
        top1[rows] = order[:, 0]
        inside = np.zeros(block.shape, bool)
        np.put_along_axis(inside, order[:, :k], True, axis=1)
        bits[rows] = np.packbits(inside, axis=1)
        ranks = _average_ranks(block, order)
        spread[rows] = rank_spread(ranks)
        if keep_ranks:
            kept = np.empty((m, n), ranks.dtype) if kept is None else kept
            kept[rows] = ranks
        if on_ranks is not None:
            on_ranks(rows, ranks)
        if labelled:
            rel = np.take_along_axis(_same(tr, te[rows]), order, axis=1)
            same1[rows], hits[rows] = rel[:, 0], rel[:, :k].sum(axis=1)
            n_pos = rel.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                a = np.where(rel, np.cumsum(rel, axis=1) / positions, 0.0).sum(axis=1) / n_pos
            ap[rows] = np.where(n_pos > 0, a, np.nan)
    return RankedRows(k, top1, same1, hits, ap, bits, spread, kept)


def overlap_from_bits(bits_a: np.ndarray, bits_b: np.ndarray, k: int) -> np.ndarray:
    """``[R]`` ``|top-k of a  intersect  top-k of b| / k`` from two :attr:`RankedRows.topk_bits` blocks."""
    return np.bitwise_count(bits_a & bits_b).sum(axis=1, dtype=np.int64) / k


def _per_test(S: np.ndarray, tr: np.ndarray, te: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """The headline metrics' inputs per test sample [n_test] (``top1``, ``top1_same``, ``hits``, ``ap``)."""
    return _per_test_of(rank_rows(S, k, tr, te))


def _per_test_of(r: RankedRows) -> dict[str, np.ndarray]:
    return {"top1": r.top1, "top1_same": r.top1_same, "hits": r.hits, "ap": r.ap}


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


UNLABELLED_K = 10  # the top k of an unlabelled run (no classes to size it by), at most n_train
# the summary keys that need labels (None in an unlabelled run's metric rows: "needs labels", never a number)
LABEL_METRICS = ("acc", "coverage", "acc_lo", "acc_hi", "coverage_lo", "coverage_hi", "auprc", "chance_acc",
                 "chance_coverage", "best_coverage")


def has_labels(labels: Sequence[str | None]) -> bool:
    """Whether a split's labels exist: non-empty and no None (an unlabelled dataset's labels are all None)."""
    return len(labels) > 0 and all(x is not None for x in labels)


def default_k(train_labels: Sequence[str | None]) -> int:
    """The run's k when the spec sets none: :func:`paper_k` with labels; without, ``min(UNLABELLED_K, n_train)``."""
    if has_labels(train_labels):
        return paper_k(train_labels)
    return max(1, min(UNLABELLED_K, len(train_labels)))


def best_coverage(train_labels: Sequence[str], test_labels: Sequence[str], k: int) -> float:
    """Largest achievable Coverage@k: mean over test of ``min(k, #same-label train) / k``.

    Below 1 when some test label has fewer than k training samples (imbalanced mixes).
    """
    tr, te = _labels(train_labels, "train"), _labels(test_labels, "test")
    k = _k(k, tr.size)
    return float(np.mean(np.minimum(k, _label_counts(tr, te)) / k))


def chance_acc(train_labels: Sequence[str], test_labels: Sequence[str]) -> float:
    """Expected Acc@1 of a uniformly random ranking: mean over test of (#same-label train / n_train)."""
    tr, te = _labels(train_labels, "train"), _labels(test_labels, "test")
    return float((_label_counts(tr, te) / tr.size).mean())


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


def per_label_of(ranked: RankedRows, test_labels: Sequence[str]) -> list[dict]:
    """:func:`per_label`'s rows from a labelled :class:`RankedRows`."""
    return _per_label(_per_test_of(ranked), _labels(test_labels, "test"), ranked.k)


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
    return int(np.unique(np.concatenate([ranking(S[rows])[:, 0] for rows in row_chunks(*S.shape)])).size)


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
    if A.shape[1] == 0:
        return out
    for rows in row_chunks(*A.shape):
        ranks = np.stack([_average_ranks(X[rows], _order(X[rows])) for X in (A, B)])
        out[rows] = spearman_of_ranks(ranks, np.stack([rank_spread(r) for r in ranks]))[:, 0, 1]
    return out


def top_k_rows(S, k: int) -> np.ndarray:
    """The ``k`` best training indices per test row (``[n_test, k]``), by :func:`ranking`'s rule."""
    S = _matrix(S)
    k = max(1, min(int(k), S.shape[1]))
    return np.concatenate([ranking(S[rows])[:, :k] for rows in row_chunks(*S.shape)])


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
      overlap_per_test. (For many methods of a large run, :class:`engine.evaluation.tables.Evaluation` computes the same
      from one :func:`rank_rows` per method.)
    """
    A, B = _matrix(S_a), _matrix(S_b)
    if A.shape != B.shape:
        raise InputError(f"score matrices must have the same shape, got {A.shape} and {B.shape}")
    k = _k(k, A.shape[1])
    ra, rb = rank_rows(A, k, keep_ranks=True), rank_rows(B, k, keep_ranks=True)
    rhos = spearman_of_ranks(np.stack([ra.ranks, rb.ranks]), np.stack([ra.spread, rb.spread]))[:, 0, 1]
    return agreement_summary(rhos, overlap_from_bits(ra.topk_bits, rb.topk_bits, k))


def agreement_summary(rhos: np.ndarray, overlaps: np.ndarray) -> dict:
    """:func:`agreement`'s dict from its per-test values (the mean Spearman leaves undefined rows out)."""
    spearman = float(np.nanmean(rhos)) if np.any(~np.isnan(rhos)) else float("nan")
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
                          k: int | None = None, *, on_ranks=None) -> tuple[dict, list[dict]]:
    """``(summarize(...), per_label(...))`` from one ranking of the matrix; ``on_ranks`` as in :func:`rank_rows`
    (how :class:`engine.evaluation.tables.Evaluation` keeps the ranks for the method agreement without a second sort)."""
    S, tr, te = _check(S, train_labels, test_labels)
    k = paper_k(tr) if k is None else _k(k, tr.size)
    ranked = rank_rows(S, k, tr, te, on_ranks=on_ranks)
    return summary_of(ranked, tr, te), per_label_of(ranked, te)


def summary_of(ranked: RankedRows, train_labels: Sequence[str], test_labels: Sequence[str]) -> dict:
    """:func:`summarize`'s dict from a :class:`RankedRows`; one ranked without labels gives None for every key of
    :data:`LABEL_METRICS` (only ``n_distinct_top1`` and ``k`` need no labels)."""
    if ranked.top1_same is None:
        return {**dict.fromkeys(LABEL_METRICS), "n_distinct_top1": int(np.unique(ranked.top1).size), "k": ranked.k}
    tr, te, k = _labels(train_labels, "train"), _labels(test_labels, "test"), ranked.k
    top1, hits = ranked.top1_same, ranked.hits
    acc_ci, cov_ci = bootstrap_ci(top1), bootstrap_ci(hits / k)
    return {
        "acc": float(top1.mean()),
        "coverage": float(hits.sum() / (te.size * k)),
        "acc_lo": acc_ci[0], "acc_hi": acc_ci[1], "coverage_lo": cov_ci[0], "coverage_hi": cov_ci[1],
        "auprc": _nanmean(ranked.ap),
        "chance_acc": chance_acc(tr, te),
        "chance_coverage": chance_coverage(tr, te),
        "best_coverage": best_coverage(tr, te, k),
        "n_distinct_top1": int(np.unique(ranked.top1).size),
        "k": k,
    }


def unstable_methods(rows: Sequence[dict], threshold: float) -> list[tuple[str, float, list[tuple[str, float]]]]:
    """The methods whose stability (mean top-k overlap over the perturbations that should not matter, the
    ``stability`` table's rows: method, perturbation, should_matter, overlap) is under ``threshold``, by name:
    ``(method, stability, [(perturbation, overlap), ...])`` with the perturbations under ``threshold``, worst first.
    The one rule behind the pages' and the report's warnings."""
    by_method: dict[str, list[tuple[str, float]]] = {}
    for r in rows:
        if not r["should_matter"]:
            by_method.setdefault(r["method"], []).append((r["perturbation"], float(r["overlap"])))
    out = []
    for method in sorted(by_method):
        pairs = by_method[method]
        stability = float(np.mean([o for _, o in pairs]))
        if stability < threshold:
            out.append((method, stability, sorted([p for p in pairs if p[1] < threshold], key=lambda p: p[1])))
    return out
