"""A run whose data has no labels, in a real browser: every page opens on it without a traceback, the home page
says that no ground truth is available, and no page prints NaN where a label metric would be."""

import re
import shutil

import pytest
from conftest import start_app, stop
from e2e_helpers import screenshot, wait_for_app

from ui.navigation import PAGES

pytestmark = pytest.mark.browser

# how a missing number prints (f"{nan:.2f}", str(None) after a field name); "NaN:" opens an explanation
NAN_WORD = re.compile(r"\bnan\b|\bNaN\b(?!:)|: None\b|\(None\)")


@pytest.fixture(scope="module")
def unlabelled_app(tiny_unlabelled_run, tmp_path_factory):
    data = tmp_path_factory.mktemp("unlabelled-app")
    shutil.copytree(tiny_unlabelled_run, data / "runs" / tiny_unlabelled_run.name)
    proc, url = start_app(data)
    yield url, tiny_unlabelled_run.name
    stop(proc)


def test_every_page_opens_on_an_unlabelled_run(page, unlabelled_app):
    url, run = unlabelled_app
    page.goto(url)
    wait_for_app(page)
    page.get_by_text("No ground truth is available").first.wait_for(timeout=60_000)
    home = page.inner_text("body")
    assert "needs labels" in home and "Traceback" not in home
    screenshot(page, "home-unlabelled")
    for info in PAGES:
        page.goto(f"{url}/{info.url_path}?run={run}")
        wait_for_app(page)
        page.wait_for_selector("h1", timeout=60_000)
        body = page.inner_text("body")
        assert "Traceback" not in body and "could not be read" not in body, info.title
        # tables draw on a canvas (not in inner_text); the text around them must not print a missing number
        assert not NAN_WORD.search(body), (info.title, NAN_WORD.search(body))
