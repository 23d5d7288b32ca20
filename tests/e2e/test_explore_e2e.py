"""The Explore page in a real browser: URL state is read, three method columns are drawn, k can be changed."""

import pytest
from e2e_helpers import choose_option, screenshot, wait_for_app
from playwright.sync_api import expect

pytestmark = pytest.mark.browser



@pytest.fixture
def test3(tiny_run):
    """Test sample 3 of the run the app serves (prompt, response, label), read from its run folder."""
    import pyarrow.parquet as pq

    s = pq.read_table(tiny_run / "samples.parquet").to_pandas()
    return s[(s.split == "test") & (s.sample_id == 3)].iloc[0]


def test_explore_reads_url_and_reacts_to_k(page, app_url, test3):
    page.goto(app_url + "/Explore?test=3&k=4")
    wait_for_app(page)
    # Elements stream in while the script runs: wait for all three method columns, then the chart.
    expect(page.get_by_text("Coverage@4", exact=True)).to_have_count(3, timeout=60_000)
    page.wait_for_selector("[data-testid='stPlotlyChart'] .main-svg", timeout=30_000)
    text = page.inner_text("body")
    # the prompt and label as written: markdown characters in them (the '*' of a vowel-replacing grammar) shown
    assert test3.prompt.split(" -> ")[-1] in text and test3.label in text
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


def _choose(page, key: str, option_text: str) -> None:
    """Open the selectbox with widget key ``key`` and click the first option starting with ``option_text``."""
    choose_option(page, page.locator(f".st-key-{key}").get_by_role("combobox"), option_text)


def test_explore_pick_prompt_drill_and_export(page, app_url, tmp_path, test3):
    page.goto(app_url + "/Explore?k=3")
    wait_for_app(page)
    expect(page.get_by_text("Coverage@3", exact=True)).to_have_count(3, timeout=60_000)
    # pick test prompt #3 through the chooser, as a user would
    _choose(page, "test", "#3 ·")
    expect(page.get_by_text(test3.prompt.split(" -> ")[-1]).first).to_be_visible(timeout=60_000)
    assert "test=3" in page.url
    # drill into training sample 7: the URL records it and the drill-down names it
    _choose(page, "train", "#7 ·")
    expect(page.get_by_text("Test prompts that rank training sample 7 in their top 3")).to_be_visible(timeout=30_000)
    assert "train=7" in page.url
    # export the ranked tables as CSV: the file holds one row per method and rank
    with page.expect_download(timeout=30_000) as dl:
        page.locator(".st-key-dl_csv button").click()
    path = tmp_path / "ranked.csv"
    dl.value.save_as(path)
    import pandas as pd

    df = pd.read_csv(path)
    assert set(df.method) == {"datainf", "repsim", "gradsim"} and len(df) == 3 * 3  # 3 methods x k
    assert set(df.test_id) == {3}
    assert "Traceback" not in page.inner_text("body")
    screenshot(page, "explore_drill")
