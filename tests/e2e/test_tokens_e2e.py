"""The token view in a real browser: the drill-down's button starts the background job, the page follows it and
then shades the training sample's tokens (the job really runs: ``python -m engine tokens`` on the tiny run)."""

import pytest
from e2e_helpers import screenshot, wait_for_app
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_compute_and_show_token_shares(page, app_url):
    page.goto(app_url + "/Explore?test=3&train=7&k=3")
    wait_for_app(page)
    button = page.locator(".st-key-tok_compute button")
    expect(button).to_be_visible(timeout=60_000)
    button.click()
    expect(page.get_by_text("the shares add up to")).to_be_visible(timeout=600_000)  # the job ran and finished
    wait_for_app(page)
    text = page.inner_text("body")
    assert "Which tokens of training sample 7 carry its score for test prompt 3" in text
    assert "lowers the score" in text and "raises it" in text and "Traceback" not in text
    spans = page.locator("span[title^='token ']")
    assert spans.count() > 10
    assert "No token view for repsim" in text
    page.set_viewport_size({"width": 1400, "height": 3600})
    screenshot(page, "explore_tokens")
    # another method and another test prompt come from the same job: no second computation
    page.goto(app_url + "/Explore?test=5&train=7&k=3&tokm=exact")
    wait_for_app(page)
    expect(page.get_by_text("the shares add up to")).to_be_visible(timeout=60_000)
    assert page.locator(".st-key-tok_compute button").count() == 0
