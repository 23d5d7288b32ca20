"""The plain-language readings quote the numbers of the tables they read."""

import math

import pandas as pd

from ui.readings import convergence_reading, correlation, fmt, ihvp_reading, retrain_reading


def test_fmt_and_correlation():
    assert fmt(float("nan")) == "n/a" and fmt(None) == "n/a"
    assert fmt(0.00012) == "1.2e-04" and fmt(12.345) == "12.3"
    rho, r = correlation([1, 2, 3, 4], [2, 4, 6, 8.5])
    assert rho == 1.0 and r > 0.99
    assert all(math.isnan(v) for v in correlation([1, 1, 1], [1, 2, 3]))


def test_ihvp_reading_says_whether_datainf_error_grows():
    rows = pd.DataFrame([
        {"level": "entries", "dim": 16, "method": "datainf", "lambda_c": 10.0, "rel_error": 0.1, "cosine": 0.99,
         "spearman": 0.99, "iterations": None, "note": ""},
        {"level": "all", "dim": 4096, "method": "datainf", "lambda_c": 10.0, "rel_error": 0.9, "cosine": 0.5,
         "spearman": 0.6, "iterations": None, "note": ""},
        {"level": "all", "dim": 4096, "method": "lissa", "lambda_c": 10.0, "rel_error": 1e-5, "cosine": 1.0,
         "spearman": 1.0, "iterations": 1234, "note": "converged"},
    ])
    text = " ".join(ihvp_reading(rows, 10.0))
    assert "0.1 on 16 parameters and 0.9 on 4096" in text and "grows" in text
    assert "1.0e-05" in text and "1234 steps" in text
    assert ihvp_reading(rows, 1.0) == []


def test_convergence_reading():
    ev = pd.DataFrame({"checkpoint": [0, 1, 2], "train_loss": [3.0, 1.0, 0.2], "test_loss": [3.0, 1.5, 1.4],
                       "gen_acc": [0.0, 0.5, 0.9], "behaviour_rate": [0.0, 0.5, 0.9]})
    drift = pd.DataFrame({"method": ["a", "b"], "checkpoint": [2, 2], "spearman_prev": [0.4, 0.95],
                          "top1_same_prev": [0.5, 1.0]})
    lb = pd.DataFrame({"method": ["a", "a", "b", "b"], "checkpoint": [1, 2, 1, 2], "acc": [0.5, 0.8, 0.6, 0.4]})
    text = " ".join(convergence_reading(ev, drift, lb))
    assert "from 3 (epoch 0) to 1.4 (epoch 2)" in text and "90 %" in text
    assert "memorises" in text
    assert "most stable scores are **b**" in text and "least stable **a**" in text
    assert "largest gain is **a** (0.5 → 0.8)" in text and "largest drop **b**" in text


def test_retrain_reading_escapes_and_correlates():
    groups = pd.DataFrame({
        "kind": ["none", "single", "label", "random", "random"],
        "identical": [True, False, False, False, False],
        "param_change": [0.0, 0.1, 0.5, 0.3, 0.2], "mean_abs_dloss": [0.0, 0.01, 0.2, 0.1, 0.05]})
    methods = pd.DataFrame({"method": ["<b>x</b>", "y"], "spearman_pooled": [0.8, 0.1], "lds": [float("nan")] * 2,
                            "n_pairs": [40, 40], "n_random": [2, 2]})
    text = " ".join(retrain_reading(groups, methods))
    assert "bit for bit" in text and "Spearman 1 (Pearson" in text
    assert "&lt;b&gt;x&lt;/b&gt;" in text and "<b>" not in text
    assert "datamodeling" not in text  # no LDS with fewer than 3 random subsets


def test_chart_text_is_cut_and_defanged_not_escaped():
    from ui.common import chart_text

    assert chart_text('all "x" <b>bold</b>', 100) == 'all "x" ‹b›bold‹/b›'
    assert chart_text("a" * 10, 5) == "aaaa…"
