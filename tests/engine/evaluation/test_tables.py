"""engine.evaluation.tables.Evaluation: the metric and agreement rows of many methods, from one ranking per method (ranks
kept in a scratch file, top-k sets as bits), against scipy's Spearman and a Python loop over the rows."""

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from engine.evaluation import metrics as M
from engine.evaluation.tables import Evaluation


def loop_top(row, k):
    return set(sorted(range(len(row)), key=lambda i: (-row[i] if not math.isnan(row[i]) else math.inf, i))[:k])


@pytest.mark.parametrize("chunk", [None, 40])
def test_evaluation_rows_equal_the_references(tmp_path, monkeypatch, chunk):
    if chunk:  # a few rows per chunk: the scratch file is read back in pieces
        monkeypatch.setattr(M, "_CHUNK_ELEMENTS", chunk)
    rng = np.random.default_rng(3)
    m, n, k = 9, 31, 4
    tr = [str(x) for x in rng.integers(0, 3, n)]
    te = [str(x) for x in rng.integers(0, 3, m)]
    mats = {name: np.round(rng.normal(size=(m, n)), 1).astype(np.float32) for name in ("c", "a", "b")}  # ties
    mats["b"][2, 7] = np.nan  # a row without a defined correlation
    mats["a"][5] = 1.0  # a constant row
    ev = Evaluation(tr, te, k, workdir=str(tmp_path))
    for name, S in mats.items():
        assert ev.add(name, 1, S) == M.summarize(S, tr, te, k)
    assert list(tmp_path.iterdir()), "the ranks are kept in the scratch folder until the agreement"
    ev.add_agreement(1)
    assert [(r["method_a"], r["method_b"]) for r in ev.agreement] == [("a", "b"), ("a", "c"), ("b", "c")]
    per_test = {(a, b, j): (rho, ov) for a, b, j, rho, ov in zip(
        ev.test_agreement["method_a"], ev.test_agreement["method_b"], ev.test_agreement["test_id"],
        ev.test_agreement["spearman"], ev.test_agreement["overlap"])}
    for row in ev.agreement:
        A, B = mats[row["method_a"]].astype(float), mats[row["method_b"]].astype(float)
        rhos, overlaps = [], []
        for j in range(m):
            defined = not (np.isnan(A[j]).any() or np.isnan(B[j]).any() or np.ptp(A[j]) == 0 or np.ptp(B[j]) == 0)
            rhos.append(spearmanr(A[j], B[j]).statistic if defined else np.nan)
            overlaps.append(len(loop_top(A[j], k) & loop_top(B[j], k)) / k)
            got = per_test[(row["method_a"], row["method_b"], j)]
            assert got[0] == pytest.approx(rhos[-1], rel=1e-12, nan_ok=True) and got[1] == overlaps[-1]
        assert row["spearman"] == pytest.approx(np.nanmean(rhos), rel=1e-12)
        assert row["overlap"] == pytest.approx(np.mean(overlaps), rel=1e-12)
        pair = M.agreement(A, B, k)  # the two-matrix function gives the same
        assert row["spearman"] == pytest.approx(pair["spearman"], rel=1e-12)
    assert not [p for p in Path(tmp_path).rglob("*.ranks")], "scratch ranks are removed after the agreement"


def test_a_matrix_of_the_wrong_shape_is_refused(tmp_path):
    from engine.errors import InputError

    ev = Evaluation(["a", "b", "a", "b"], ["a", "b", "a"], 1, workdir=str(tmp_path))
    for shape in ((3, 3), (2, 4), (3, 5)):
        with pytest.raises(InputError, match="does not match 3 test labels x 4 train labels"):
            ev.add("m", 1, np.zeros(shape))
