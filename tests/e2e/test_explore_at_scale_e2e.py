"""Explore over a store holding a 10M-row run (1000 test prompts x 10k training samples, synthetic, written the
way the pipeline writes a run): a prompt's rankings open from the top-k table and the score files in place, with
no whole matrix loaded. The time from the URL to the drawn page is written to
``artifacts/explore_10m.json`` (a figure for the README, not an assertion: timings do not belong in tests)."""

import json
import time

import pytest
from playwright.sync_api import expect

from conftest import start_app, stop
from e2e_helpers import REPO, wait_for_app

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def big_app(tmp_path_factory):
    import store
    from bench.store import synthetic_run

    data = tmp_path_factory.mktemp("big")
    folder = synthetic_run(data / "runs", "synthetic-10m", 1000, 10_000)
    with store.Store(data / "influence.duckdb") as s:
        s.ingest_run(folder)
    proc, url = start_app(data)
    yield url
    stop(proc)


def test_explore_opens_a_prompt_of_a_10m_row_run(page, big_app):
    page.goto(big_app + "/Explore?run=synthetic-10m")  # a first visit: the page's caches warm up
    wait_for_app(page)
    times = []
    for test_id in (7, 512, 999):
        start = time.perf_counter()
        page.goto(f"{big_app}/Explore?run=synthetic-10m&methods=gradsim&test={test_id}&k=10")
        expect(page.get_by_text("Coverage@10", exact=True)).to_have_count(1, timeout=60_000)
        wait_for_app(page)
        times.append(time.perf_counter() - start)
        text = page.inner_text("body")
        assert f"test prompt {test_id} about" in text and "Traceback" not in text  # the synthetic prompt
        assert page.locator("[data-testid='stDataFrame']").count() >= 1
    out = REPO / "artifacts" / "explore_10m.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": 10_000_000, "seconds_to_drawn_page": times}, indent=1))
