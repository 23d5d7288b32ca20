"""The Explore page in a real browser: URL state is read, three method columns are drawn, k can be changed."""

import pytest
from playwright.sync_api import expect

from e2e_helpers import screenshot, wait_for_app

pytestmark = pytest.mark.browser

TEST_3_PROMPT = "th* c*lm f*rm*r c*lls th* n**ghb*r"  # test sample 3 of the tiny grammars run


def test_explore_reads_url_and_reacts_to_k(page, app_url):
    page.goto(app_url + "/Explore?test=3&k=4")
    wait_for_app(page)
    # Elements stream in while the script runs: wait for all three method columns, then the chart.
    expect(page.get_by_text("Coverage@4", exact=True)).to_have_count(3, timeout=60_000)
    page.wait_for_selector("[data-testid='stPlotlyChart'] .main-svg", timeout=30_000)
    text = page.inner_text("body")
    assert TEST_3_PROMPT in text
    assert "Replace Vowels with *" in text
    for method in ("datainf", "repsim", "gradsim"):
        assert method in text
    assert text.count("Coverage@4") == 3
    assert "Traceback" not in text
    assert page.locator("[data-testid='stDataFrame']").count() >= 3
    page.set_viewport_size({"width": 1400, "height": 2600})  # the app scrolls inside; show more of it
    screenshot(page, "explore")

    # One step right on the k slider: every column re-ranks with k = 5 and the URL follows.
    thumb = page.locator("[data-testid='stSlider'] input[type='range']").first
    thumb.focus()
    thumb.press("ArrowRight")
    expect(page.get_by_text("Coverage@5", exact=True)).to_have_count(3, timeout=60_000)
    wait_for_app(page)
    assert "k=5" in page.url and "test=3" in page.url
    screenshot(page, "explore_k5")
