"""Score stability between checkpoints against a scipy loop."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from engine.analysis.convergence import score_drift


def test_score_drift_matches_a_loop():
    rng = np.random.default_rng(0)
    prev = rng.normal(size=(5, 20))
    now = prev + 0.5 * rng.normal(size=(5, 20))
    row = score_drift("gradsim", 3, prev, now)
    want = np.mean([spearmanr(a, b).statistic for a, b in zip(prev, now)])
    assert row["spearman_prev"] == pytest.approx(want, rel=1e-12)
    assert row["top1_same_prev"] == pytest.approx(np.mean(prev.argmax(1) == now.argmax(1)))
    assert row["method"] == "gradsim" and row["checkpoint"] == 3
    same = score_drift("x", 2, prev, prev)
    assert same["spearman_prev"] == pytest.approx(1.0) and same["top1_same_prev"] == 1.0
