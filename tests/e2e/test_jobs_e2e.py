"""Jobs from a real browser against the app and worker that ``make run`` starts: a job queued in the form runs to
completion and its run appears in the explorer without a restart or a second command; a cancelled job stops and
leaves no run behind; Ctrl-C stops both processes."""

import signal
import socket
import subprocess

import pytest
from conftest import REPO, launcher_cmd, start_launcher, stop
from e2e_helpers import fill_and_queue, job_card, screenshot, wait_for_app, wait_status

from engine.jobs import workers

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def jobs_app(tmp_path):
    """``make run`` from a clean checkout: the launcher (app + one worker) on an empty temp data folder."""
    launcher, url, env = start_launcher(tmp_path)
    yield url, tmp_path, launcher, env
    stop(launcher)


def test_make_run_gives_a_working_app_a_job_runs_from_the_browser(page, jobs_app):
    url, data, launcher, env = jobs_app
    page.goto(url + "/Jobs")
    wait_for_app(page)
    page.get_by_text("1 worker alive").wait_for(timeout=60_000)  # the worker make run started, with its device
    assert socket.gethostname() in page.inner_text("body")
    fill_and_queue(page, "browser-job", epochs=2)
    wait_status(page, "browser-job", "done", 300)  # the list refreshes itself every 2 s
    screenshot(page, "jobs")
    page.goto(url + "/Explore?run=browser-job")
    wait_for_app(page)
    page.wait_for_selector("[data-testid='stPlotlyChart']", timeout=60_000)
    assert page.locator(".st-key-run input").input_value() == "browser-job"  # the run picker (a combobox)
    assert "Traceback" not in page.inner_text("body")

    # a second `make run` on the same port says what is there instead of failing obscurely
    again = subprocess.run(launcher_cmd(int(url.rsplit(":", 1)[1])), cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 1 and "an app is already running on port" in again.stderr, again.stderr
    # Ctrl-C stops the app and the worker together
    launcher.send_signal(signal.SIGINT)
    out, _ = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, out
    assert workers.alive(data / "jobs") == [] and not list((data / "jobs" / ".workers").glob("*.json"))
    assert "running job" in (data / "worker.log").read_text()


def test_cancel_from_the_browser_stops_the_job(page, jobs_app):
    url, data, _, _ = jobs_app
    page.goto(url + "/Jobs")
    wait_for_app(page)
    fill_and_queue(page, "cancel-me", epochs=100)
    wait_status(page, "cancel-me", "running", 120)
    job_card(page, "cancel-me").get_by_role("button", name="Cancel").click()
    wait_status(page, "cancel-me", "cancelled", 60)
    assert not (data / "runs" / "cancel-me").exists()
    assert not [p for p in (data / "runs").glob(".cancel-me*")] if (data / "runs").exists() else True
    page.goto(url)
    wait_for_app(page)
    assert "cancel-me" not in page.inner_text("body")
