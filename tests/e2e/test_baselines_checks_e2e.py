"""Baselines, self-influence and self-checks in a real browser: the home leaderboard has bm25 and random beside
the other methods, the run's self-checks are shown, the Dataset page ranks self-influence."""

import pytest
from e2e_helpers import screenshot, wait_for_app
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_home_has_baselines_and_checks(page, app_url):
    page.goto(app_url)
    wait_for_app(page)
    expect(page.get_by_text("all passed").first).to_be_visible(timeout=60_000)
    page.wait_for_selector("[data-testid='stPlotlyChart'] .main-svg", timeout=30_000)
    heatmap = page.locator("[data-testid='stPlotlyChart']").first.inner_text()
    assert "bm25" in heatmap and "random" in heatmap
    page.get_by_text("Numerical self-checks of").first.click()
    expect(page.get_by_text("each sample's LoRA gradient taken alone", exact=False)).to_be_visible(timeout=30_000)
    checks = page.locator("[data-testid='stExpander']").filter(has_text="Numerical self-checks of")
    assert checks.locator("[data-testid='stDataFrame']").count() == 2  # (the fingerprint has an expander too)
    assert "Traceback" not in page.inner_text("body")
    page.set_viewport_size({"width": 1400, "height": 2600})
    screenshot(page, "home_checks")


def test_dataset_ranks_self_influence(page, app_url):
    page.goto(app_url + "/Dataset?si=gradsim")
    wait_for_app(page)
    expect(page.get_by_text("Self-influence: the training samples that support themselves most")).to_be_visible(
        timeout=60_000)
    expect(page.get_by_text("s(z_i, z_i) under gradsim at checkpoint 2")).to_be_visible(timeout=30_000)
    assert "Traceback" not in page.inner_text("body")
    page.set_viewport_size({"width": 1400, "height": 3000})
    screenshot(page, "dataset_self_influence")
