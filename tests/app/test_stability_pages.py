"""AppTest: the stability check where users see it — a column of the home page's leaderboard (with and without
labels), the Compare page's panel (table and chart), and a warning naming the setting for an unstable method."""

import pandas as pd
import pyarrow.parquet as pq

from engine.catalog.analyses import STABILITY_WARN
from engine.paths import REPO_ROOT

HOME = REPO_ROOT / "app_pages" / "home.py"
COMPARE = REPO_ROOT / "app_pages" / "compare_methods.py"


def _summary(run_folder) -> dict:
    t = pq.read_table(run_folder / "stability_methods.parquet").to_pandas()
    return dict(zip(t.method, t.stability))


def _warned(run_folder) -> list[str]:
    rows = pq.read_table(run_folder / "stability.parquet").to_pandas()
    calm = rows[~rows.should_matter].groupby("method").overlap.mean()
    return sorted(calm[calm < STABILITY_WARN].index)


def test_home_leaderboard_has_a_stability_column(analysis_store_env, tiny_analysis_run, open_page):
    at = open_page(HOME)
    board = next(d.value for d in at.dataframe if "stability" in d.value.columns and "acc" in d.value.columns)
    want = _summary(tiny_analysis_run)
    assert board.stability.between(0, 1).all() and len(board)
    assert all(abs(s - want[m]) < 1e-12 for m, s in zip(board.method, board.stability))
    warnings = " ".join(w.value for w in at.warning)
    for method in _warned(tiny_analysis_run):
        assert f"**{method}** (stability" in warnings and "this ranking changes when" in warnings


def test_home_leaderboard_without_labels_carries_stability(unlabelled_store_env, tiny_unlabelled_run, open_page):
    at = open_page(HOME)
    board = next(d.value for d in at.dataframe if "agreement_spearman" in d.value.columns)
    want = _summary(tiny_unlabelled_run)
    assert dict(zip(board.method, board.stability)) == want
    assert want["bm25"] == 1.0  # a model-free baseline: no setting reaches its scores


def test_compare_page_has_the_stability_panel(analysis_store_env, tiny_analysis_run, open_page, charts):
    at = open_page(COMPARE)
    assert "stability_chart" in charts(at)
    rows = pq.read_table(tiny_analysis_run / "stability.parquet").to_pandas()
    grid = next(d.value for d in at.dataframe if "stability" in d.value.columns)
    for r in rows.itertuples():
        assert grid.set_index("method").loc[r.method, r.perturbation] == r.overlap
    assert sum(len(t["x"]) for t in charts(at)["stability_chart"]["data"]) == len(rows)
    every = next(d.value for d in at.dataframe if "source" in d.value.columns)
    pd.testing.assert_frame_equal(every.reset_index(drop=True)[["method", "perturbation"]],
                                  rows[["method", "perturbation"]].reset_index(drop=True))
    text = " ".join(s.value for s in at.subheader)
    assert "Stability" in text


def test_home_shows_the_settings_fingerprint(store_env, tiny_run, open_page):
    at = open_page(HOME)
    table = next(d.value for d in at.dataframe if list(d.value.columns) == ["setting", "value"])
    values = dict(zip(table.setting, table.value))
    assert values["loss positions"] == "response (prompt masked, preprocessing clean)"
    assert values["attention kernel"] == "sdpa" and values["precision"].startswith("model float32")
    assert "datainf 10" in values["damping (lambda_c)"] and "gradsim_proj 128, 0" in values["projection (dim, seed)"]
