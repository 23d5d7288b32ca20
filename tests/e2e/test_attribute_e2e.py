"""A foreign adapter (HF Trainer + peft, made in a fixture) attributed with ``python -m engine attribute`` opens in
Explore in a real browser: its run is picked from the URL, its methods rank training samples, no traceback."""

import subprocess
import sys

import pytest
from conftest import REPO, start_app, stop
from e2e_helpers import screenshot, wait_for_app
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_an_attributed_trainer_adapter_opens_in_explore(page, foreign_adapter, tmp_path):
    base, out, dataset = foreign_adapter
    cmd = [sys.executable, "-m", "engine", "attribute", "--model", str(base), "--adapter", str(out),
           "--checkpoints", str(out), "--dataset", str(dataset), "--methods", "datainf,gradsim,tracin,repsim",
           "--name", "my-adapter", "--store", str(tmp_path / "influence.duckdb"), "--quiet"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "run my-adapter written to" in done.stdout
    proc, url = start_app(tmp_path)
    try:
        page.goto(url + "/Explore?run=my-adapter&test=0&k=3")
        wait_for_app(page)
        expect(page.get_by_text("Coverage@3", exact=True)).to_have_count(3, timeout=60_000)
        page.wait_for_selector("[data-testid='stPlotlyChart'] .main-svg", timeout=30_000)
        assert page.locator(".st-key-run input").input_value() == "my-adapter"
        text = page.inner_text("body")
        for method in ("datainf", "gradsim", "repsim"):
            assert method in text
        assert "Traceback" not in text
        screenshot(page, "explore_foreign_adapter")
    finally:
        stop(proc)
