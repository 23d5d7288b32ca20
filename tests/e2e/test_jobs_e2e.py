"""Jobs from a real browser against a real worker: a job queued in the form runs to completion and its run appears
in the explorer without a restart; a cancelled job stops and leaves no run behind."""

import os
import subprocess
import sys
import time

import pytest

from conftest import REPO, start_app, stop
from e2e_helpers import screenshot, wait_for_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def jobs_app(tmp_path):
    """An app on an empty store plus one worker sharing its data folder."""
    proc, url = start_app(tmp_path)
    env = {**os.environ, "INFLUENCE_RUNS": str(tmp_path / "runs")}
    worker = subprocess.Popen([sys.executable, "-m", "engine", "worker", "--store", str(tmp_path / "influence.duckdb"),
                               "--poll", "0.5"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    yield url, tmp_path
    stop(worker)
    stop(proc)


def _fill_and_queue(page, name: str, epochs: int) -> None:
    page.get_by_label("Run name (optional)").fill(name)
    page.get_by_label("Training samples per label").fill("3")
    page.get_by_label("Test samples per label").fill("1")
    page.get_by_label("Epochs").fill(str(epochs))
    page.get_by_role("button", name="Validate and queue").click()
    page.get_by_text("Queued job").wait_for(timeout=60_000)


def _job_card(page, name: str):
    return page.locator("[class*='st-key-job_']", has_text=name).first  # st.container(key="job_<id>")


def _wait_status(page, name: str, status: str, timeout_s: float) -> None:
    end = time.time() + timeout_s
    while time.time() < end:
        if f"{name} — {status}" in page.inner_text("body"):
            return
        time.sleep(1)
    raise AssertionError(f"job {name} did not reach {status}: {page.inner_text('body')[-2000:]}")


def test_job_from_the_browser_runs_and_shows_up_in_the_explorer(page, jobs_app):
    url, data = jobs_app
    page.goto(url + "/Jobs")
    wait_for_app(page)
    _fill_and_queue(page, "browser-job", epochs=2)
    _wait_status(page, "browser-job", "done", 300)  # the list refreshes itself every 2 s
    screenshot(page, "jobs")
    page.goto(url + "/Explore?run=browser-job")
    wait_for_app(page)
    page.wait_for_selector("[data-testid='stPlotlyChart']", timeout=60_000)
    assert page.locator(".st-key-run input").input_value() == "browser-job"  # the run picker (a combobox)
    assert "Traceback" not in page.inner_text("body")


def test_cancel_from_the_browser_stops_the_job(page, jobs_app):
    url, data = jobs_app
    page.goto(url + "/Jobs")
    wait_for_app(page)
    _fill_and_queue(page, "cancel-me", epochs=100)
    _wait_status(page, "cancel-me", "running", 120)
    _job_card(page, "cancel-me").get_by_role("button", name="Cancel").click()
    _wait_status(page, "cancel-me", "cancelled", 60)
    assert not (data / "runs" / "cancel-me").exists()
    assert not [p for p in (data / "runs").glob(".cancel-me*")] if (data / "runs").exists() else True
    page.goto(url)
    wait_for_app(page)
    assert "cancel-me" not in page.inner_text("body")
