"""The container for real: build the project's image with podman (scripts/container_smoke.sh holds this machine's
steps), start it on a fresh data volume, wait for Streamlit's health endpoint, queue a tiny-model job that a worker
container (compose.yaml's worker command) runs on the same volume, then drive the home page and the Explore page
with Playwright against the container.
Also: the image's HEALTHCHECK, the non-root user, and the baked SmolLM2 loading with no network at all.

Runs in CI (CI=true; .ci/run installs podman, runc, debootstrap). Elsewhere it is skipped when podman cannot be
used (not installed, or not root: only rootful podman was tried on these machines)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from e2e_helpers import screenshot, wait_for_app  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.container, pytest.mark.browser, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "container_smoke.sh"
IMAGE = "localhost/influence-explorer:smoke"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]


def _podman_unusable() -> str | None:
    if shutil.which("podman") is None:
        return "podman is not installed (apt-get install podman runc debootstrap, as .ci/run does)"
    if os.geteuid() != 0:
        return "not root: the container smoke test uses rootful podman (rootless was not tried here)"
    return None


def _sh(*args: str, timeout: float = 120, check: bool = True, stdin: str | None = None):
    """Run scripts/container_smoke.sh with ``args``; fail the test with its output when it fails."""
    r = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, input=stdin)
    if check and r.returncode != 0:
        pytest.fail(f"{' '.join(args[:3])} ... exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def image():
    reason = _podman_unusable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the container smoke test, but {reason}")
        pytest.skip(reason)
    t0 = time.time()
    _sh("build", IMAGE, timeout=1500)
    print(f"\nimage built in {time.time() - t0:.0f} s")
    return IMAGE


@pytest.fixture(scope="module")
def container(image):
    """The app container on the host network (a free port) with a fresh named volume at /data."""
    name = f"influence-smoke-{uuid.uuid4().hex[:8]}"
    port = _free_port()
    _sh("podman", "volume", "create", name)
    try:
        _sh("run", "-d", "--name", name, "--network", "host", "--init", "-v", f"{name}:/data",
            "-e", f"STREAMLIT_SERVER_PORT={port}", "-e", "STREAMLIT_SERVER_ADDRESS=127.0.0.1", image)
        url = f"http://127.0.0.1:{port}"
        t0, deadline = time.time(), time.time() + 120
        while True:
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if time.time() > deadline:
                logs = _sh("podman", "logs", "--tail", "40", name, check=False)
                pytest.fail(f"no 'ok' from {url}/_stcore/health in 120 s; container log:\n{logs.stdout}{logs.stderr}")
            time.sleep(0.5)
        print(f"\nhealthy {time.time() - t0:.1f} s after start")
        yield {"name": name, "url": url, "volume": name}
    finally:
        _sh("podman", "rm", "-f", "-t", "5", name, check=False)
        _sh("podman", "volume", "rm", "-f", name, check=False)


@pytest.fixture(scope="module")
def tiny_run_in_container(image, container, tiny_spec):
    """The deployment's job flow on the tests' tiny-model run (tests/conftest.py): a job is queued on the data
    volume, then a second container from the same image runs compose.yaml's worker command (plus --once) on that
    volume and writes the run folder; the app, the store's only owner, ingests it when a page loads."""
    submit = ("import json, sys; from engine.jobs.queue import submit; from engine.paths import default_jobs_dir; "
              "from engine.spec.load import spec_from_dict; "
              "print(submit(default_jobs_dir(), spec_from_dict(json.load(sys.stdin)), submitted_by='smoke'))")
    job = _sh("podman", "exec", "-i", container["name"], "python", "-c", submit,
              stdin=json.dumps(tiny_spec)).stdout.strip()
    r = _sh("run", "--rm", "--network", "host", "-v", f"{container['volume']}:/data", image,
            "python", "-m", "engine", "worker", "--store", "/data/influence.duckdb", "--once", timeout=600)
    assert f"job {job}: done" in r.stdout, r.stdout + r.stderr
    return tiny_spec["name"]


@pytest.fixture(scope="module")
def page(container):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Debian chromium not found at {CHROMIUM}: apt-get install chromium (see Makefile)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield pg
        browser.close()


def test_image_runs_as_non_root_with_its_healthcheck(container):
    who = _sh("podman", "exec", container["name"], "id", "-u").stdout.strip()
    assert who == "1000"
    # the HEALTHCHECK survived the build (--format docker) and passes; podman also prints a harmless
    # "unable to get systemd connection" here, where no systemd runs
    r = _sh("podman", "healthcheck", "run", container["name"], check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    # the data volume is the app user's; the baked model is outside it
    r = _sh("podman", "exec", container["name"], "sh", "-c",
            "touch /data/.w && rm /data/.w && ls /opt/influence/models/smollm2-135m")
    assert "config.json" in r.stdout and "model.safetensors" in r.stdout


def test_baked_smollm2_loads_without_network(image):
    code = ("from engine.model.base import load_base; m, t = load_base('smollm2-135m'); "
            "print(sum(p.numel() for p in m.parameters()), t('hello').input_ids)")
    r = _sh("run", "--rm", "--network", "none", image, "python", "-c", code, timeout=300)
    n_params = int(r.stdout.split()[0])
    assert 130_000_000 < n_params < 140_000_000, r.stdout


def test_home_page_in_the_container(page, container, tiny_run_in_container):
    page.goto(container["url"])
    wait_for_app(page)
    page.wait_for_selector("[data-testid='stPlotlyChart'] .main-svg", timeout=60_000)
    text = page.inner_text("body")
    assert tiny_run_in_container in text and "chance level" in text
    assert "Traceback" not in text
    screenshot(page, "container_home")


def test_explore_page_in_the_container(page, container, tiny_run_in_container, tiny_spec):
    from playwright.sync_api import expect

    from engine.pipeline.stages import load_task
    from engine.spec.load import spec_from_dict

    # test sample 3 of the task the container's run was made from (the generators are deterministic per seed)
    test3 = load_task(spec_from_dict(tiny_spec).task).test[3]
    shown_prompt = test3.prompt.split(" -> ")[-1]

    page.goto(f"{container['url']}/Explore?run={tiny_run_in_container}&k=3")
    wait_for_app(page)
    expect(page.get_by_text("Coverage@3", exact=True)).to_have_count(3, timeout=60_000)
    # pick test prompt #3 through the chooser (a combobox in Streamlit 1.67), as a user would
    page.locator(".st-key-test").get_by_role("combobox").click()
    page.keyboard.type("#3 ·")
    page.get_by_role("option").filter(has_text="#3 ·").first.click()
    wait_for_app(page)
    expect(page.get_by_text(shown_prompt).first).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Coverage@3", exact=True)).to_have_count(3, timeout=60_000)
    assert "test=3" in page.url
    text = page.inner_text("body")
    assert test3.label in text and "Traceback" not in text
    screenshot(page, "container_explore")
