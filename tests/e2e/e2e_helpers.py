"""Helpers shared by the browser tests."""

import re
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "artifacts" / "screenshots"


def wait_for_app(page, timeout=90_000):
    """Wait until the script has finished its run (Streamlit's own e2e suite uses these attributes)."""
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout)
    page.wait_for_selector("[data-testid='stAppViewContainer']", timeout=timeout)


def choose_option(page, box, option: str) -> None:
    """Open the selectbox whose combobox is ``box`` and pick the option whose text is ``option``: typed first,
    as a user would, because a long list is virtualised and shows only its first entries."""
    box.click()
    page.keyboard.type(option)
    page.get_by_role("option").filter(has_text=option).first.click()
    wait_for_app(page)


def screenshot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def fill_and_queue(page, name: str, epochs: int) -> None:
    """On the Jobs page: a small tiny-model job named ``name`` (3 train, 1 test per label), queued."""
    page.get_by_label("Run name (optional)").fill(name)
    page.get_by_label("Training samples per label").fill("3")
    page.get_by_label("Test samples per label").fill("1")
    page.get_by_label("Epochs").fill(str(epochs))
    page.get_by_role("button", name="Validate and queue").click()
    # the confirmation, not the job list's "… — queued job" line that can show up at the same time
    page.get_by_text(re.compile(r"^Queued job ")).wait_for(timeout=60_000)


def job_card(page, name: str):
    return page.locator("[class*='st-key-job_']", has_text=name).first  # st.container(key="job_<id>")


def wait_status(page, name: str, status: str, timeout_s: float) -> None:
    """Wait until the job list (it refreshes itself every 2 s) shows job ``name`` with ``status``."""
    end = time.time() + timeout_s
    while time.time() < end:
        if f"{name} — {status}" in page.inner_text("body"):
            return
        time.sleep(1)
    raise AssertionError(f"job {name} did not reach {status}: {page.inner_text('body')[-2000:]}")



_DRAWN_JS = """([selector, text, also]) => {
  const app = document.querySelector("[data-testid='stApp']");
  return !!app && app.getAttribute("data-test-script-state") === "notRunning" && !!document.querySelector(also)
    && [...document.querySelectorAll(selector)].some(e => e.innerText.includes(text));
}"""


def wait_drawn(page, selector: str, text: str, also: str = "[data-testid='stDataFrame']", timeout=60_000) -> None:
    """Wait until the script has finished and the page has an element ``selector`` showing ``text`` and one
    matching ``also``, checked at every animation frame (``expect`` polls at growing intervals, up to a second
    apart, which would blur a timing)."""
    page.wait_for_function(_DRAWN_JS, arg=[selector, text, also], polling="raf", timeout=timeout)
