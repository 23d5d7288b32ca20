"""The stability check as the pages show it: the warning rule (a method's mean overlap over the perturbations that
should not matter, under 0.9) and its sentence, the methods × perturbations grid, the chart's bars."""

import numpy as np
import pandas as pd

from engine.catalog.analyses import STABILITY_PERTURBATIONS, STABILITY_WARN
from engine.evaluation.metrics import unstable_methods
from ui.stability import perturbation_chart, perturbation_table, stability_warnings

ROWS = pd.DataFrame([
    # a: calm 0.95 and 0.75 -> 0.85 < 0.9: warned, the attention kernel named; the reference never counts
    {"method": "a", "perturbation": "proj_seed", "should_matter": False, "overlap": 0.95, "spearman": 0.9},
    {"method": "a", "perturbation": "attention", "should_matter": False, "overlap": 0.75, "spearman": 0.7},
    {"method": "a", "perturbation": "loss_positions", "should_matter": True, "overlap": 0.1, "spearman": 0.1},
    # b<x>: 1.0 and 0.85 -> 0.925: not warned although one perturbation is under 0.9
    {"method": "b<x>", "perturbation": "damping_x10", "should_matter": False, "overlap": 1.0, "spearman": 1.0},
    {"method": "b<x>", "perturbation": "checkpoint", "should_matter": False, "overlap": 0.85, "spearman": 0.8},
    # c: 0.5 and 0.6 -> warned, both named, worst first
    {"method": "c", "perturbation": "precision", "should_matter": False, "overlap": 0.6, "spearman": np.nan},
    {"method": "c", "perturbation": "checkpoint", "should_matter": False, "overlap": 0.5, "spearman": 0.2},
]).assign(source="stored scores", note="")


def test_the_rule_is_the_mean_overlap_over_what_should_not_matter():
    got = unstable_methods(ROWS.to_dict("records"), STABILITY_WARN)
    assert [(m, round(s, 6)) for m, s, _ in got] == [("a", 0.85), ("c", 0.55)]
    assert got[0][2] == [("attention", 0.75)] and got[1][2] == [("checkpoint", 0.5), ("precision", 0.6)]


def test_the_warnings_name_the_setting_that_moves_the_ranking():
    warnings = stability_warnings(ROWS)
    assert len(warnings) == 2
    assert warnings[0] == ("**a** (stability 0.85 < 0.9): this ranking changes when the attention kernel (eager vs "
                           "SDPA) changes (top-k overlap 0.75).")
    assert warnings[1].startswith("**c** (stability 0.55 < 0.9): this ranking changes when the checkpoint")
    assert "and when the precision" in warnings[1]
    assert stability_warnings(ROWS.iloc[0:0]) == []


def test_the_grid_keeps_the_catalog_order_and_leaves_gaps():
    grid = perturbation_table(ROWS)
    assert list(grid.columns) == [p for p in STABILITY_PERTURBATIONS if p in set(ROWS.perturbation)]
    assert grid.loc["a", "attention"] == 0.75 and np.isnan(grid.loc["a", "checkpoint"])
    assert perturbation_table(ROWS, "spearman").loc["c", "checkpoint"] == 0.2


def test_the_chart_draws_one_bar_per_row():
    fig = perturbation_chart(ROWS)
    assert sum(len(t.x) for t in fig.data) == len(ROWS)
    names = {t.name for t in fig.data}
    assert "loss_positions (reference)" in names and "attention" in names
