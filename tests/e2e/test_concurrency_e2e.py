"""20 browser sessions browse at once while a new run is ingested: no lock or other errors, every page right."""

import os
import shutil

import pytest
from conftest import start_app, stop
from e2e_helpers import wait_for_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

N = 20
PATHS = ["/Explore", "/", "/Compare_methods", "/Dataset"]


def _check(page, runs: set[str]) -> None:
    wait_for_app(page, timeout=240_000)
    text = page.inner_text("body")
    assert "Traceback" not in text and "could not be read" not in text, text[:2000]
    assert page.locator("[data-testid='stException']").count() == 0
    if page.locator(".st-key-run input").count():
        assert page.locator(".st-key-run input").input_value() in runs


def test_twenty_sessions_while_a_run_is_ingested(browser, tiny_run, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / tiny_run.name)
    proc, url = start_app(tmp_path)
    contexts = [browser.new_context(viewport={"width": 1200, "height": 900}) for _ in range(N)]
    try:
        pages = [c.new_page() for c in contexts]
        for page in pages:  # 20 sessions on a 2-core machine: first responses can take a while
            page.set_default_navigation_timeout(240_000)
            page.set_default_timeout(240_000)
        for i, page in enumerate(pages):  # start every session before any finishes
            page.goto(url + PATHS[i % len(PATHS)], wait_until="commit")
        # a worker finishing a run: the folder appears complete in one rename, mid-browse
        shutil.copytree(tiny_run, runs / ".second.tmp-1")
        os.replace(runs / ".second.tmp-1", runs / "second")
        names = {tiny_run.name, "second"}
        for page in pages:
            _check(page, names)
        # every session now sees the new run
        for i, page in enumerate(pages):
            page.goto(url + ("/Explore?run=second" if i % 2 else "/"), wait_until="commit")
        for i, page in enumerate(pages):
            _check(page, names)
            if i % 2:
                assert page.locator(".st-key-run input").input_value() == "second"
                page.wait_for_selector("[data-testid='stPlotlyChart']", timeout=120_000)
            else:
                assert "second" in page.inner_text("body")
    finally:
        for c in contexts:
            c.close()
        stop(proc)
