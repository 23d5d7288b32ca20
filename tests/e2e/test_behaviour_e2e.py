"""The Behaviour page in a real browser: a label query against a control, the concentration, the group heatmap
and its metric switch, the URL following."""

import re

import pytest
from e2e_helpers import screenshot, wait_for_app
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_behaviour_query_control_and_groups(page, app_url):
    page.goto(app_url + "/Behaviour?method=datainf&q_by=label&q=Remove%20All%20Vowels&c_by=label"
                        "&c=Remove%20All%20Consonants")
    wait_for_app(page)
    expect(page.get_by_text("Top 10 hold")).to_be_visible(timeout=60_000)
    page.wait_for_selector("[data-testid='stPlotlyChart'] .main-svg", timeout=30_000)
    text = page.inner_text("body")
    assert "minus control label Remove All Consonants" in text and "Traceback" not in text
    assert page.locator("[data-testid='stPlotlyChart']").count() == 3  # curve, labels, heatmap
    assert "share of the test group's positive influence" in text
    page.set_viewport_size({"width": 1400, "height": 3000})
    screenshot(page, "behaviour")
    # the group view's metric switch redraws the heatmap and goes into the URL
    page.get_by_text("mean score per (training, test) pair").click()
    page.wait_for_url(re.compile(r"[?&]metric=mean"), timeout=30_000)  # the rerun may start after the click returns
    wait_for_app(page)
    expect(page.get_by_text("mean score per (training, test) pair").first).to_be_visible()
    screenshot(page, "behaviour_groups_mean")
