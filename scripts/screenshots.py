"""Screenshots of every page as a user sees them, from a real browser (Debian chromium + Playwright).

    .venv/bin/python scripts/screenshots.py [--store data/influence.duckdb] [--run demo-smollm2-135m]
        [--out artifacts/screenshots] [--widths 1600] [--pages home,explore]

Starts ``streamlit run app.py`` on a free port over the given store, opens each page by its own URL with the
run in the query string, waits for the script run and the charts, and writes ``<out>/<page>.png`` (with several
``--widths``, e.g. ``1280,1600``: ``<out>/<page>-<width>.png``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.paths import default_store_path  # noqa: E402  (after the path set-up above)

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]
PAGES = {"home": "", "explore": "Explore", "compare": "Compare_methods", "dataset": "Dataset",
         "ihvp_error": "iHVP_error", "convergence": "Convergence", "retraining": "Retraining", "jobs": "Jobs",
         "behaviour": "Behaviour"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default=str(default_store_path()))
    ap.add_argument("--run", default="demo-smollm2-135m")
    ap.add_argument("--out", default=str(REPO / "artifacts" / "screenshots"))
    ap.add_argument("--query", default="", help="extra query string, e.g. 'test=3&k=5'")
    ap.add_argument("--widths", default="1600", help="window widths in px, comma-separated")
    ap.add_argument("--pages", default=",".join(PAGES), help=f"comma-separated subset of {', '.join(PAGES)}")
    ap.add_argument("--charts", action="store_true", help="also write every chart alone: <page>-chart<i>.png")
    args = ap.parse_args()
    widths = [int(w) for w in args.widths.split(",") if w.strip()]
    pages = {name: PAGES[name] for name in args.pages.split(",") if name.strip()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "INFLUENCE_STORE": str(Path(args.store).resolve())}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                        headless=True, args=ARGS)
            for width in widths:
                page = browser.new_page(viewport={"width": width, "height": 1100})
                for name, path in pages.items():
                    query = f"?run={args.run}" + (f"&{args.query}" if args.query else "")
                    page.goto(f"{url}/{path}{query}")
                    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']",
                                           timeout=120_000)
                    try:
                        page.wait_for_selector("[data-testid='stPlotlyChart'] .main-svg", timeout=15_000)
                    except Exception:  # a page without charts
                        pass
                    time.sleep(1.0)
                    # Streamlit scrolls inside its main block, not the document: grow the window to the content
                    # so that the screenshot holds the whole page (charts re-lay out to the same width)
                    height = page.evaluate("Math.max(...[...document.querySelectorAll("
                                           "'[data-testid=stMain], [data-testid=stSidebar]')].map(e => e.scrollHeight))")
                    page.set_viewport_size({"width": width, "height": min(max(int(height), 1100), 16000)})
                    time.sleep(1.5)
                    target = out / (f"{name}.png" if len(widths) == 1 else f"{name}-{width}.png")
                    page.screenshot(path=str(target), full_page=True)
                    print(target)
                    if args.charts:  # each chart on its own, at full resolution, to read its labels
                        for i, chart in enumerate(page.locator("[data-testid='stPlotlyChart']").all()):
                            if chart.is_visible():  # not those in a tab that is not open
                                chart.screenshot(path=str(target.with_name(f"{target.stem}-chart{i}.png")))
                    page.set_viewport_size({"width": width, "height": 1100})
                page.close()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


if __name__ == "__main__":
    main()
