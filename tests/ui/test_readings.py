"""The plain-language readings quote the numbers of the tables they read."""

import math

import pandas as pd

from ui.readings import (convergence_reading, correlation, counterfactual_reading, fmt, ihvp_reading, lds_reading,
                         noise_reading, retrain_reading)


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


def test_retrain_reading_escapes_correlates_and_keeps_kinds_apart():
    groups = pd.DataFrame({
        "kind": ["noise", "single", "label", "random", "random"],
        "param_change": [0.05, 0.1, 0.5, 0.3, 0.2], "mean_abs_dloss": [0.01, 0.01, 0.2, 0.1, 0.05]})
    methods = pd.DataFrame({"method": ["<b>x</b>", "y", "<b>x</b>", "y"], "kind": ["label", "label", "lds", "lds"],
                            "spearman": [0.8, 0.1, 0.2, 0.6], "n_pairs": [40, 40, 80, 80]})
    text = " ".join(retrain_reading(groups, methods))
    assert "Across 4 retrainings" in text and "Spearman 1 (Pearson" in text  # the noise rows are not removals
    assert "whole labels: **&lt;b&gt;x&lt;/b&gt;** (0.8 over 40 pairs)" in text and "<b>" not in text
    assert "LDS subsets: **y** (0.6 over 80 pairs)" in text and "Kinds are kept apart" in text


def test_noise_reading_counts_changes_inside_the_floor():
    noise = pd.DataFrame({"measure": ["mean_abs_dloss", "param_change"], "floor": [0.02, 0.5], "mean": [0.01, 0.4],
                          "n_seeds": [2, 2]})
    groups = pd.DataFrame({"kind": ["noise", "noise", "single", "label", "lds"],
                           "within_noise": [None, None, True, False, True]})
    text = " ".join(noise_reading(noise, groups))
    assert "2 retrainings of the full set" in text and "up to 0.02" in text and "‖ΔW‖ = 0.5" in text
    assert "2 of 3 retrainings" in text and "1 single samples" in text and "1 LDS subsets" in text
    assert "no noise floor" in noise_reading(noise.iloc[0:0], groups)[0]


def test_lds_reading_says_when_there_are_too_few_subsets():
    lds = pd.DataFrame({"method": ["a", "b", "c"], "lds": [0.3, 0.25, -0.1], "lds_lo": [0.1, 0.05, -0.3],
                        "lds_hi": [0.5, 0.4, 0.05], "n_subsets": [8] * 3, "alpha": [0.5] * 3})
    text = " ".join(lds_reading(lds))
    assert "best **a** with 0.3 (95 % interval 0.1 to 0.5)" in text and "overlaps those of **b**, so" in text
    assert "Lowest: **c** with -0.1 (-0.3 to 0.05)" in text
    five = pd.DataFrame({"method": list("abcdefg"), "lds": [0.5] * 7, "lds_lo": [0.1] * 7, "lds_hi": [0.9] * 7,
                         "n_subsets": [50] * 7, "alpha": [0.5] * 7})
    assert "**b**, **c**, **d**, **e** and 2 more" in " ".join(lds_reading(five))
    assert "Too few subsets for the interval to mean anything" in text and "M = 8" in text
    many = lds.assign(n_subsets=50, lds_lo=[0.28, 0.05, -0.3], lds_hi=[0.32, 0.26, 0.1])
    text = " ".join(lds_reading(many))
    assert "Too few" not in text and "clear of every other method's interval" in text


def test_counterfactual_reading():
    summary = pd.DataFrame({"method": ["a", "b"], "n_prompts": [3, 3], "k": [5, 5], "topk_dloss": [0.4, 0.01],
                            "random_dloss": [0.02, 0.02], "gain": [0.38, -0.01], "beats_random": [1.0, 0.0],
                            "within_noise": [0.0, 1.0]})
    text = " ".join(counterfactual_reading(summary))
    assert "on 3 test prompts" in text and "top 5" in text and "most for **a** (+0.4 against +0.02" in text
    assert "beats every random draw on most prompts for **a**." in text


def test_ihvp_reading_separates_cross_matrix_curvature_from_damping():
    base = {"level": "all", "dim": 4096, "lambda_c": 10.0, "cosine": 0.9, "iterations": None, "note": ""}
    rows = pd.DataFrame([
        {**base, "level": "entries", "dim": 16, "method": "datainf", "rel_error": 0.1, "spearman": 0.99},
        {**base, "method": "datainf", "rel_error": 0.9, "spearman": 0.6},
        {**base, "method": "exact_blockdiag", "rel_error": 0.025, "spearman": 0.98},
        {**base, "method": "exact_blockdiag_shared", "rel_error": 0.03, "spearman": 0.97},
        {**base, "method": "exact_matrix_damping", "rel_error": 10.1, "spearman": 0.6},
    ])
    text = " ".join(ihvp_reading(rows, 10.0))
    assert "relative error 0.025 from the exact iHVP over all 4096 parameters with the same per-matrix damping" in text
    assert "cost of ignoring the curvature between matrices" in text
    assert "one shared λ for every matrix: the block-diagonal form is at relative error 0.03" in text
    assert "damping choice alone" in text and "10.1" in text


def test_chart_text_is_cut_and_defanged_not_escaped():
    from ui.common import chart_text

    assert chart_text('all "x" <b>bold</b>', 100) == 'all "x" ‹b›bold‹/b›'
    assert chart_text("a" * 10, 5) == "aaaa…"
