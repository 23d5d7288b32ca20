"""The home page in a real browser: the tiny run is ingested on first load and its leaderboard is drawn."""

import pytest

from e2e_helpers import screenshot, wait_for_app

pytestmark = pytest.mark.browser


def test_home_shows_run_and_leaderboard_chart(page, app_url):
    page.goto(app_url)
    wait_for_app(page)
    page.get_by_text("Influence Explorer").first.wait_for()
    page.wait_for_selector("[data-testid='stPlotlyChart'] .main-svg", timeout=30_000)
    text = page.inner_text("body")
    assert "tiny-grammars" in text and "chance level" in text
    assert "Traceback" not in text
    screenshot(page, "home")
