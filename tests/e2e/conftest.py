"""Browser tests: start ``streamlit run app.py`` on a free port over a store built from the tiny run, and drive
Debian's chromium with Playwright (it cannot download its own browser here). Screenshots go to
``artifacts/screenshots/`` as test artefacts."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(data: Path, **env_extra) -> tuple[subprocess.Popen, str]:
    """``streamlit run app.py`` on a free port over the store ``data/influence.duckdb`` (runs in ``data/runs``);
    returns the process and its URL once the health endpoint answers."""
    port = _free_port()
    env = {**os.environ, "INFLUENCE_STORE": str(data / "influence.duckdb"), "INFLUENCE_RUNS": str(data / "runs"),
           **env_extra}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port",
         str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, url)
    return proc, url


def wait_healthy(proc: subprocess.Popen, url: str, timeout_s: float = 60) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                return
        except OSError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail(f"streamlit did not become healthy in {timeout_s:.0f} s")


def launcher_cmd(port: int) -> list[str]:
    """What ``make run PORT=port`` runs (Makefile), bound to the loopback interface."""
    return [sys.executable, "scripts/run_app.py", "--port", str(port), "--address", "127.0.0.1"]


def start_launcher(data: Path) -> tuple[subprocess.Popen, str, dict]:
    """``make run``'s launcher (the app and one worker) on a free port over ``data/influence.duckdb`` (runs, jobs
    and the worker log next to it, as by default); returns the process, the app's URL and the environment."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("INFLUENCE_RUNS", "INFLUENCE_JOBS")}
    env["INFLUENCE_STORE"] = str(data / "influence.duckdb")
    proc = subprocess.Popen(launcher_cmd(port), cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, url)
    return proc, url, env


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def app_data(tiny_run, tmp_path_factory) -> Path:
    """The data folder of the shared app: its runs folder holds the tiny run."""
    data = tmp_path_factory.mktemp("appdata")
    shutil.copytree(tiny_run, data / "runs" / tiny_run.name)
    return data


@pytest.fixture(scope="session")
def app_url(app_data):
    proc, url = start_app(app_data)
    yield url
    stop(proc)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Debian chromium not found at {CHROMIUM}: apt-get install chromium (see .ci/run)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    yield pg
    ctx.close()
