"""The linear datamodeling score (LDS; Park et al. 2023, TRAK), as Kronfluence, dattri and Bergson report it.

Draw M random subsets S_1..S_M of the training set, each keeping ``round(alpha * n)`` samples (alpha = 0.5 by
default), retrain on each, and measure every test sample's loss L_j(S_k). A method's scores s(z_i, z'_j) (larger =
more responsible, i.e. keeping z_i should LOWER the test loss) predict

    g_j(S_k) = sum_{i in S_k} s(z_i, z'_j)                  (the sum of the kept samples' scores)

and  LDS = mean_j Spearman_k( g_j(S_k), -L_j(S_k) ),  the rank correlation across the M subsets, averaged over the
test samples (a test sample whose row is constant has no correlation and is left out). Since
g_j(S_k) = sum_i s_ij - (sum of the removed samples' scores), this equals the Spearman of the removed samples'
score sum against the change of the test loss, which is how the retraining tables store the predictions.

Uncertainty: a percentile bootstrap that resamples both the subsets (with replacement; the per-test Spearman is
recomputed on the drawn subsets, ties ranked by average rank) and the test samples, so the interval carries both
the few-subsets noise and the test-sample spread. With few subsets (say M < 20) each per-test Spearman is so coarse
that the interval itself is unreliable: the app says so.
"""

from __future__ import annotations

import numpy as np

from engine.evaluation.metrics import spearman_rows


def lds_subsets(n: int, alpha: float, m: int, seed: int) -> list[tuple[int, ...]]:
    """The REMOVED ids (sorted) of ``m`` random subsets that keep ``round(alpha * n)`` of ``n`` samples (>= 1)."""
    keep = min(n, max(1, int(round(alpha * n))))
    out = []
    for s in range(m):
        kept = set(np.random.default_rng([seed, 2, s]).choice(n, size=keep, replace=False).tolist())
        out.append(tuple(i for i in range(n) if i not in kept))
    return out


def kept_score_sums(S: np.ndarray, removed: list[tuple[int, ...]]) -> np.ndarray:
    """``g [m_test, M]``: per test sample and subset, the sum of the kept samples' scores (S [m_test, n])."""
    S = np.asarray(S, dtype=np.float64)
    total = S.sum(axis=1)
    return np.stack([total - S[:, list(r)].sum(axis=1) for r in removed], axis=1)


def lds_per_test(pred: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """Spearman across subsets per test sample [m] of ``pred`` [m, M] against ``-loss`` [m, M] (NaN: constant)."""
    return spearman_rows(np.asarray(pred, float), -np.asarray(loss, float))


def lds(pred: np.ndarray, loss: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """``{"lds", "lo", "hi", "n_test"}``: the LDS and its percentile-bootstrap interval (see the module docstring).

    n_test counts the test samples with a defined correlation. NaN everywhere when there is none."""
    pred, loss = np.asarray(pred, float), np.asarray(loss, float)
    rho = lds_per_test(pred, loss)
    ok = np.isfinite(rho)
    if not ok.any():
        return {"lds": float("nan"), "lo": float("nan"), "hi": float("nan"), "n_test": 0}
    m, M = pred.shape
    rng = np.random.default_rng([seed, 3])
    draws = np.empty(n_boot)
    for b in range(n_boot):
        cols = rng.integers(0, M, size=M)
        rows = rng.integers(0, m, size=m)
        r = spearman_rows(pred[:, cols], -loss[:, cols])[rows]
        draws[b] = np.nanmean(r) if np.isfinite(r).any() else np.nan
    draws = draws[np.isfinite(draws)]
    tail = (1 - level) / 2
    lo, hi = (np.quantile(draws, [tail, 1 - tail]) if len(draws) else (np.nan, np.nan))
    return {"lds": float(rho[ok].mean()), "lo": float(lo), "hi": float(hi), "n_test": int(ok.sum())}
