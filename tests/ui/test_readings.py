"""The plain-language readings quote the numbers of the tables they read."""

import math

import pandas as pd

from ui.readings import (
    convergence_reading,
    correlation,
    counterfactual_reading,
    fmt,
    ihvp_reading,
    lds_reading,
    noise_reading,
    retrain_reading,
)


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


def test_retrain_reading_correlates_within_a_size_and_reads_the_per_prompt_figure():
    groups = pd.DataFrame({
        "kind": ["noise", "single", "single", "single", "label", "random", "random", "random", "identity"],
        "n_removed": [0, 1, 1, 1, 4, 6, 6, 6, 0],
        "param_change": [0.05, 0.1, 0.2, 0.3, 0.5, 0.3, 0.2, 0.4, 0.0],
        "mean_abs_dloss": [0.01, 0.01, 0.02, 0.03, 0.2, 0.1, 0.05, 0.02, 0.0]})
    methods = pd.DataFrame({
        "method": ["<b>x</b>", "y", "<b>x</b>", "y", "x", "y"], "kind": ["label", "label", "lds", "lds", "random", "random"],
        "spearman": [0.8, 0.1, 0.9, 0.95, 0.7, 0.9], "n_pairs": [40, 40, 80, 80, 60, 60],
        "centred": [None, None, 0.3, 0.5, 0.2, 0.1], "per_test": [None, None, 0.2, 0.6, 0.4, 0.05],
        "control": [0.5, 0.5, 0.9, 0.9, 0.85, 0.85], "control_centred": [None] * 6,
        "control_per_test": [None] * 6})
    text = " ".join(retrain_reading(groups, methods))
    # within one size only: 1 removed rises with the weights (1), 6 removed falls (-0.5); label (1 group) is left out
    assert "1 removed (3 retrainings): Spearman 1; 6 removed (3 retrainings): Spearman -0.5" in text
    assert "A weak link" in text and "4 removed" not in text
    assert "whole labels: **&lt;b&gt;x&lt;/b&gt;** (0.8 pooled over prompts, row-mean control 0.5)" in text
    assert "<b>" not in text
    # LDS: y has the best per-prompt figure (0.6), although the pooled 0.95 is what a pooled reading would quote
    assert "LDS subsets: **y** (0.6 per prompt, row-mean control n/a)" in text
    assert "random k-sets: **x** (0.4 per prompt" in text


def test_kind_figure_falls_back_from_per_prompt_to_centred_to_pooled():
    from ui.readings import kind_figure

    value, control, what = kind_figure({"per_test": 0.4, "control_per_test": None, "centred": 0.1, "spearman": 0.9})
    assert (value, what) == (0.4, "per prompt") and math.isnan(control)
    assert kind_figure({"per_test": None, "centred": 0.3, "control_centred": 0.1, "spearman": 0.9}) == \
        (0.3, 0.1, "centred per prompt")
    assert kind_figure({"spearman": 0.9, "control": 0.8}) == (0.9, 0.8, "pooled over prompts")  # old run folders


def test_noise_reading_counts_changes_inside_the_floor():
    noise = pd.DataFrame({"measure": ["mean_abs_dloss", "param_change"], "floor": [0.02, 0.5], "mean": [0.01, 0.4],
                          "n_seeds": [2, 2]})
    groups = pd.DataFrame({"kind": ["noise", "noise", "single", "label", "lds"],
                           "within_noise": [None, None, True, False, True]})
    text = " ".join(noise_reading(noise, groups))
    assert "2 retrainings of the full set" in text and "up to 0.02" in text and "‖ΔW‖ = 0.5" in text
    assert "2 of 3 retrainings" in text and "1 single samples" in text and "1 LDS subsets" in text
    assert "no noise floor" in noise_reading(noise.iloc[0:0], groups)[0]


def test_identity_and_seed_readings():
    from ui.readings import identity_reading, seed_reading

    groups = pd.DataFrame({"kind": ["identity", "single", "random", "repeat"], "identical": [True, False, False, False],
                           "mean_abs_dloss": [0.0, 0.01, 0.03, 0.02], "seed_spread": [None, 0.004, 0.02, None],
                           "seed_rho": [None, 0.2, 0.8, None]})
    assert "Check passed" in identity_reading(groups)[0]
    assert "Check failed" in identity_reading(groups.assign(identical=False))[0]
    assert identity_reading(groups[groups.kind != "identity"]) == []
    noise = pd.DataFrame({"measure": ["mean_abs_dloss"], "floor": [0.015], "mean": [0.01], "n_seeds": [2]})
    text = " ".join(seed_reading(groups, noise))
    assert "the 2 removals' effects" in text and "by 0.012 per prompt on average (largest 0.02" in text
    assert "average 0.02), beside a noise floor of 0.015" in text and "Spearman 0.2 to 0.8" in text
    assert seed_reading(groups.drop(columns="seed_spread"), noise) == []


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
                            "n_beats": [3, 0], "n_random": [19, 19], "mean_rank": [1.0, 11.3],
                            "binom_p": [0.05 ** 3, 1.0], "within_noise": [0.0, 1.0]})
    text = " ".join(counterfactual_reading(summary))
    assert "on 3 test prompts" in text and "top 5" in text and "most for **a** (+0.4 against +0.02" in text
    assert "Ranked among 19 random 5-sets per prompt (chance of beating them all: 1 in 20)" in text
    assert "**a** above all on 3 of 3 (mean rank 1 of 20, p = 1.3e-04)" in text
    assert "**b** above all on 0 of 3 (mean rank 11.3 of 20, p = 1)" in text
    assert "More often than chance (one-sided binomial test, p < 0.05): **a**." in text
    old = summary.assign(binom_p=None, n_random=2)  # a run folder written before the rank
    assert "too few random draws for a test" in " ".join(counterfactual_reading(old))


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
    assert "cost of ignoring the empirical Fisher's cross-blocks between matrices (with fewer samples" in text
    assert "one shared λ for every matrix: the block-diagonal form is at relative error 0.03" in text
    assert "damping choice alone" in text and "10.1" in text


def test_chart_text_is_cut_and_defanged_not_escaped():
    from ui.common import chart_text

    assert chart_text('all "x" <b>bold</b>', 100) == 'all "x" ‹b›bold‹/b›'
    assert chart_text("a" * 10, 5) == "aaaa…"


def _binomial_tail(hits: int, n: int, p: float) -> float:
    """P(X >= hits) for X ~ Binomial(n, p), summed term by term from the formula."""
    return sum(math.comb(n, j) * p ** j * (1 - p) ** (n - j) for j in range(hits, n + 1))


def test_beats_chance_is_the_one_sided_binomial_test():
    from ui.readings import CHANCE_P, beats_chance

    for n, p in [(30, 0.1), (40, 0.5), (10, 0.2)]:
        for hits in range(n + 1):
            assert beats_chance(hits, n, p) == (_binomial_tail(hits, n, p) < CHANCE_P), (n, p, hits)
    assert not beats_chance(5, 0, 0.1)


def _board(accs: dict, chance=0.1, cover: dict | None = None, k=10):
    board = pd.DataFrame({"method": list(accs), "acc": list(accs.values()), "chance_acc": chance, "k": k})
    if cover is not None:
        board["coverage"] = [cover[m] for m in accs]
    return board


def test_leaderboard_reading_names_who_beats_chance_and_repsim():
    from ui.readings import leaderboard_reading

    # 30 test prompts, chance 0.1: 7 hits (p = 0.026) beat it, 6 (p = 0.073) do not
    accs = {"exact": 29 / 30, "datainf": 28 / 30, "repsim": 19 / 30, "gradsim": 7 / 30, "lissa_paper": 6 / 30}
    cover = {"exact": 0.7, "datainf": 0.9, "repsim": 0.55, "gradsim": 0.2, "lissa_paper": 0.5}
    text = " ".join(leaderboard_reading(_board(accs, cover=cover), 30, model="smollm2-135m", n_labels=10,
                                        epochs=2))
    assert "4 of 5 methods beat chance on Acc@1" in text and "**lissa_paper** does not" in text
    assert "Best, at 0.97 (29 of 30, +0.87 over chance): **exact**;" in text
    assert "**RepSim** is at Acc@1 0.63 (19 of 30) and Coverage@10 0.55; 2 methods beat it on Acc@1: **exact** by " \
           "0.33 (10 prompts), **datainf** by 0.3 (9 prompts); on Coverage@10, **datainf** by 0.35, **exact** by " \
           "0.15 do." in text
    assert "Influence functions (**exact**, **datainf**) beat RepSim here, unlike the paper" in text
    assert "That can happen with a small model (smollm2-135m: " in text and "few classes (10, " in text
    assert "and a short fine-tuning (2 epochs: " in text


def test_leaderboard_reading_on_a_saturated_acc_compares_coverage():
    """The harmful_s demo: every method at Acc@1 1 (chance 0.5), the differences are in Coverage@k."""
    from ui.readings import leaderboard_reading

    accs = {"repsim": 1.0, "kfac": 1.0, "exact": 1.0, "tracin": 39 / 40}
    cover = {"repsim": 0.896, "kfac": 0.961, "exact": 0.59, "tracin": 0.619}
    text = " ".join(leaderboard_reading(_board(accs, 0.5, cover, k=20), 40, n_labels=2))
    assert "Best, at 1 (40 of 40, +0.5 over chance): **kfac**, **repsim**, **exact**." in text
    assert "no method beats it on Acc@1 (2 tie with it); on Coverage@20, **kfac** by 0.065 does." in text
    assert "Influence functions (**kfac**) beat RepSim" in text and "That can happen with few classes (2, " in text


def test_leaderboard_reading_when_repsim_wins_or_nothing_beats_chance():
    from ui.readings import leaderboard_reading

    board = _board({"repsim": 1.0, "datainf": 0.55, "gradsim": 0.6}, chance=0.5)
    text = " ".join(leaderboard_reading(board, 40))
    assert "**RepSim** is at Acc@1 1 (40 of 40); no method beats it on Acc@1 — as in the paper, where RepSim " \
           "beat the influence functions." in text
    assert "unlike the paper" not in text
    # GradSim beats RepSim here, but it is no influence function: no "differs from the paper" sentence
    text = " ".join(leaderboard_reading(_board({"repsim": 0.5, "gradsim": 0.6, "datainf": 0.4}, 0.5), 10))
    assert "No method beats chance" in text and "1 method beats it on Acc@1: **gradsim** by 0.1 (1 prompt)" in text
    assert "Influence functions" not in text and "as in the paper" not in text
    assert leaderboard_reading(_board({}), 10) == [] and leaderboard_reading(_board({"a": 0.5}), 0) == []
    assert "&lt;x&gt;" in " ".join(leaderboard_reading(_board({"<x>": 0.9, "repsim": 0.2}), 20))


def test_difference_reading_says_when_a_lead_is_within_noise():
    from ui.readings import difference_reading

    # 20 prompts, a lead of 1 prompt: the paired bootstrap interval of the difference holds 0
    a = [1] * 11 + [0] * 9
    b = [1] * 10 + [0] * 10
    close = difference_reading("exact", "repsim", a, b)
    assert "**exact** vs **repsim**: Acc@1 +0.05" in close and "20 prompts" in close and "**within noise**" in close
    # every prompt right against every prompt wrong: the interval is [1, 1]
    far = difference_reading("exact", "random", [1] * 20, [0] * 20)
    assert "Acc@1 +1, 95 % interval [1, 1]" in far and "more than the noise" in far
    # a lead of the second method reads as a negative difference
    assert "Acc@1 -0.05" in difference_reading("repsim", "exact", b, a)
