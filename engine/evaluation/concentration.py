"""How concentrated an influence ranking is: does a handful of training samples carry it, or the whole set?

For a score vector over the training samples (one behaviour's ranking, ``store.behaviour_scores``), only the
positive scores count as influence towards the behaviour. With them sorted largest first:

    curve[k]  = (sum of the k largest positive scores) / (sum of all positive scores)      k = 0..n_positive
    top_share = curve[top]          (the share held by the ``top`` largest; 1 when fewer are positive)
    n_half    = the fewest samples holding at least half of it

A cumulative curve that rises steeply means a few training samples explain the behaviour (and an attribution
method that spreads its influence evenly explains little). NaN scores are left out. numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Concentration:
    """See the module docstring. curve: [n_positive + 1] from 0 to 1; positive / negative: sums of the positive
    and of the negative scores; n_positive: how many scores are > 0."""

    top: int
    top_share: float
    n_half: int
    curve: np.ndarray
    positive: float
    negative: float
    n_positive: int
    n: int


def concentration(scores, top: int = 10) -> Concentration:
    s = np.asarray(scores, dtype=np.float64).ravel()
    s = s[~np.isnan(s)]
    pos = np.sort(s[s > 0])[::-1]
    total = float(pos.sum())
    curve = np.concatenate([[0.0], np.cumsum(pos) / total]) if total > 0 else np.zeros(1)
    top_share = float(curve[min(top, len(pos))]) if total > 0 else float("nan")
    n_half = int(np.searchsorted(curve, 0.5 - 1e-12)) if total > 0 else 0
    return Concentration(top, top_share, n_half, curve, total, float(s[s < 0].sum()), int(len(pos)), int(len(s)))
