"""The Compare methods and Dataset pages in a real browser, each opened by its own URL (URL state included)."""

import re

import pytest
from e2e_helpers import choose_option, screenshot, wait_for_app

pytestmark = pytest.mark.browser

PLOT = "[data-testid='stPlotlyChart'] .main-svg"


def _choose(page, label: str, option: str) -> None:
    """Open the selectbox labelled ``label`` and pick ``option``."""
    choose_option(page, page.get_by_role("combobox", name=label, exact=True), option)


def _tall_screenshot(page, name: str) -> None:
    """Streamlit scrolls inside its own container, so a full-page shot is only the viewport: grow it first."""
    page.set_viewport_size({"width": 1400, "height": 2800})
    page.wait_for_timeout(1_000)  # let plotly re-lay out its charts
    screenshot(page, name)


def test_compare_page_by_url_shows_agreement_and_disagreement(page, app_url):
    page.goto(f"{app_url}/Compare_methods?a=gradsim&b=exact&test=2")
    wait_for_app(page)
    page.get_by_text("Agreement between methods").first.wait_for(timeout=60_000)
    page.wait_for_selector(PLOT, timeout=60_000)
    page.get_by_text("Download CSV").wait_for(timeout=60_000)  # the last element of the page
    assert page.locator("[data-testid='stPlotlyChart']").count() == 3
    text = page.inner_text("body")
    assert "Compare methods" in text and "Where gradsim and exact disagree most" in text
    assert "Test prompt #2" in text and "Traceback" not in text
    assert "Download CSV" in text and "Download Parquet" in text

    _choose(page, "Method B", "repsim")
    page.wait_for_url(re.compile(r"[?&]b=repsim"), timeout=30_000)
    page.get_by_text("Where gradsim and repsim disagree most").wait_for(timeout=60_000)
    wait_for_app(page)
    page.wait_for_selector(PLOT, timeout=60_000)
    assert "Traceback" not in page.inner_text("body")
    _tall_screenshot(page, "compare")


def test_dataset_page_by_url_shows_samples_composition_and_topk(page, app_url):
    page.goto(f"{app_url}/Dataset?method=repsim")
    wait_for_app(page)
    page.get_by_text("Class composition").first.wait_for(timeout=60_000)
    page.wait_for_selector(PLOT, timeout=60_000)
    page.get_by_text("Download Parquet").nth(1).wait_for(timeout=60_000)  # the top-k table's export, last
    text = page.inner_text("body")
    assert "40 sample(s)" in text
    assert "repsim at checkpoint 2" in text and "Traceback" not in text
    assert "Download Parquet" in text

    _choose(page, "Split", "test")
    page.wait_for_url(re.compile(r"[?&]split=test"), timeout=30_000)
    page.get_by_text("10 sample(s)").wait_for(timeout=60_000)
    wait_for_app(page)
    page.wait_for_selector(PLOT, timeout=60_000)
    assert "Traceback" not in page.inner_text("body")
    _tall_screenshot(page, "dataset")
