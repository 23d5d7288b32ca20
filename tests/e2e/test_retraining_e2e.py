"""The Retraining page of a run with exact metagradients, in a real browser: the decomposition's reading, its
table and the prompts that have metagrad draw, with no traceback."""

import shutil

import pytest
from conftest import start_app, stop
from e2e_helpers import wait_drawn, wait_for_app

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def analysis_app(tiny_analysis_run, tmp_path_factory):
    data = tmp_path_factory.mktemp("retraining-app")
    shutil.copytree(tiny_analysis_run, data / "runs" / tiny_analysis_run.name)
    proc, url = start_app(data)
    yield url
    stop(proc)


def test_retraining_page_shows_the_decomposition_against_metagrad(page, analysis_app, tiny_analysis_run):
    page.goto(f"{analysis_app}/Retraining?run={tiny_analysis_run.name}")
    wait_for_app(page)
    wait_drawn(page, "[data-testid='stMarkdownContainer']", "with exact metagradients (metagrad)", timeout=90_000)
    text = page.inner_text("body")
    assert "Traceback" not in text and "How good can attribution be here?" in text
    assert "On the 3 test prompts with exact metagradients (metagrad) and the same 4 LDS subsets" in text
    assert "Prompts with metagrad (test ids)" in text
    # the table (a canvas grid: its cells are no DOM text) with its download buttons, the CSV holding the rows
    button = page.get_by_role("button", name="Decomposition as CSV")
    assert button.count() == 1
    with page.expect_download() as download:
        button.click()
    csv = download.value.path().read_text(encoding="utf-8")
    assert csv.splitlines()[0].startswith("method,what the score assumes,lds")
    assert {line.split(",")[0] for line in csv.splitlines()[1:]} >= {"exact", "datainf", "tracin", "metagrad"}
