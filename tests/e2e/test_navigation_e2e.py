"""The sidebar navigation in a real browser: named pages in their groups, and every page still at its old URL,
query parameters included."""

import pytest
from conftest import start_app, stop
from e2e_helpers import wait_for_app

from ui.navigation import NAVIGATION, PAGES

pytestmark = pytest.mark.browser


@pytest.fixture
def fresh_app(app_data):
    """A new app process over the shared test data, stopped after the test."""
    proc, url = start_app(app_data)
    yield url
    stop(proc)


def test_the_sidebar_lists_named_pages_in_groups(page, app_url):
    page.goto(app_url)
    wait_for_app(page)
    nav = page.locator("[data-testid='stSidebarNav']")
    nav.wait_for(timeout=60_000)
    text = nav.inner_text()
    for group, pages in NAVIGATION.items():
        assert group in text
        for p in pages:
            assert p.title in text
    assert "app" not in text.split()  # the home page is "Home", not the entry point's file name
    # sidebar order: the groups in their order, each page after its group's heading
    titles = [p.title for p in PAGES]
    positions = [text.index(t) for t in titles]
    assert positions == sorted(positions)


@pytest.mark.parametrize("info", [p for p in PAGES if p.url_path], ids=lambda p: p.url_path)
def test_every_page_keeps_its_url_and_query(page, fresh_app, tiny_run, info):
    """Each page opened by its URL as the first visit of a freshly started app (no session has run the entry
    point yet), with the grouped navigation in the sidebar."""
    page.goto(f"{fresh_app}/{info.url_path}?run={tiny_run.name}")
    wait_for_app(page)
    nav = page.locator("[data-testid='stSidebarNav']").inner_text()
    assert all(group in nav for group in NAVIGATION) and "app" not in nav.split()
    page.wait_for_selector("h1", timeout=60_000)
    body = page.inner_text("body")
    assert "Traceback" not in body and "Page not found" not in body
    assert f"run={tiny_run.name}" in page.url  # the page read its query, not a redirect to the home page
    active = page.locator("[data-testid='stSidebarNav'] a[aria-current='page']")
    assert info.title in active.inner_text()
