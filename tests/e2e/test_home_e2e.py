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
    assert "methods beat chance on Acc@1" in text  # the computed reading of the run
    assert "Traceback" not in text
    screenshot(page, "home")


def test_a_leaderboard_heatmap_cell_opens_explore_for_that_method_and_run(page, app_url):
    page.set_viewport_size({"width": 1400, "height": 2000})  # the chart in view: no scrolling under the header
    page.goto(app_url)
    wait_for_app(page)
    page.wait_for_selector("[data-testid='stPlotlyChart'] .main-svg", timeout=30_000)
    # the cell's number is an SVG link (xlink:href)
    link = page.locator("[data-testid='stPlotlyChart'] a[*|href*='methods=datainf']").first
    link.click()
    page.wait_for_url("**/Explore?*methods=datainf*", timeout=30_000)
    wait_for_app(page)
    page.get_by_text("Top ").first.wait_for(timeout=60_000)
    assert page.locator(".st-key-run input").input_value() == "tiny-grammars"
    # the page writes its selection back into the URL: exactly the one method of the clicked cell
    assert "methods=datainf&" in page.url and "ckpt=2" in page.url
    headings = [h.strip() for h in page.locator("h4").all_inner_texts()]  # one ranking column per method
    assert "datainf" in headings and "repsim" not in headings and "gradsim" not in headings


def test_jobs_page_says_plainly_when_no_worker_runs(page, app_url):
    page.goto(app_url + "/Jobs")
    wait_for_app(page)
    page.get_by_text("No worker is running").wait_for(timeout=60_000)
    page.get_by_text("python -m engine worker").first.wait_for(timeout=30_000)  # the command, in a code block
    screenshot(page, "jobs-no-worker")
