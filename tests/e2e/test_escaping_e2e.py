"""Dataset text is shown as text on every page: a run whose prompts, responses and labels carry HTML, markdown
and script (and a job whose message and log do) is browsed in a real browser. No script runs, no element or link
is made from the data, and the hostile text is visible literally where the page shows it."""

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import start_app, stop
from e2e_helpers import wait_for_app
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from ui.navigation import PAGES as NAVIGATION_PAGES

pytestmark = pytest.mark.browser

SCRIPT = "<script>window.__xss = (window.__xss || 0) + 1</script>"
PROMPT = SCRIPT + '<b>xssbold</b> **xssmd** [xsslink](javascript:window.__xss=1) <a href="javascript:window.__xss=1">xssa</a> '
RESPONSE = '<img src="x" onerror="window.__xss=1"><svg onload="window.__xss=1"></svg>__xssunder__ '
LABEL = ' <img src="y" onerror="window.__xss=1"> **xsslabel**'
MESSAGE = 'error: field "prompt" of ' + SCRIPT + '<img src="z" onerror="window.__xss=1"> **xssmsg**'

# made from the data, any of these would be an injection (whether or not its script could run)
INJECTED = ["script:has-text('__xss')", "b:has-text('xssbold')", "strong:has-text('xssmd')", "em:has-text('xssunder')",
            "strong:has-text('xsslabel')", "strong:has-text('xssmsg')", "a[href^='javascript']", "img[src='x']",
            "img[src='y']", "img[src='z']", "svg[onload]"]


def _hostile_copy(src, dst):
    """A copy of the run folder ``src`` whose samples carry the hostile text (labels renamed everywhere they
    appear: samples, per-label metrics, retraining group descriptions, the manifest). Row counts are kept, so
    the manifest's checks still hold."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    renamed = {label: label + LABEL for label in manifest["labels"]}
    for rel in manifest["files"]:
        if rel.startswith("scores/"):
            continue
        table = pq.read_table(dst / rel)
        columns = {}
        for name in table.column_names:
            values = table.column(name).to_pylist()
            if name == "label":
                values = [renamed.get(v, v) for v in values]
            elif name == "description":
                for old, new in renamed.items():
                    values = [v.replace(old, new) if isinstance(v, str) else v for v in values]
            elif rel == "samples.parquet" and name in ("prompt", "response"):
                values = [(PROMPT if name == "prompt" else RESPONSE) + v for v in values]
            columns[name] = pa.array(values, type=table.schema.field(name).type)
        pq.write_table(pa.table(columns, schema=table.schema), dst / rel)
    manifest["labels"] = [renamed[label] for label in manifest["labels"]]
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))


@pytest.fixture(scope="module")
def hostile_app(tiny_analysis_run, tiny_spec, tmp_path_factory):
    from engine.jobs import queue as jobs
    from engine.spec.load import spec_from_dict

    data = tmp_path_factory.mktemp("hostile")
    _hostile_copy(tiny_analysis_run, data / "runs" / "hostile")
    job = jobs.submit(data / "jobs", spec_from_dict({**tiny_spec, "name": "hostile-job"}))
    state = json.loads((data / "jobs" / job / "state.json").read_text())
    state.update(status="failed", returncode=2, message=MESSAGE)
    (data / "jobs" / job / "state.json").write_text(json.dumps(state))
    (data / "jobs" / job / "log.txt").write_text("loading\n" + MESSAGE + "\n")
    proc, url = start_app(data)
    yield url
    stop(proc)


PAGES = [("/" + p.url_path if p.url_path else "", p.title) for p in NAVIGATION_PAGES]  # every page, by its URL


@pytest.mark.parametrize("path, name", PAGES, ids=[name for _, name in PAGES])
def test_dataset_text_is_shown_as_text(page, hostile_app, path, name):
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(hostile_app + path)
    wait_for_app(page)
    page.wait_for_timeout(1500)  # let charts, tables and the Jobs page's fragment render
    wait_for_app(page)
    if name in ("Explore", "Compare methods", "Jobs"):  # the sample's text is there once every element has drawn:
        try:  # on a loaded machine that can take longer than the pause above; the assertions below decide
            page.wait_for_function("t => document.body.innerText.includes(t)", arg=SCRIPT, timeout=20_000)
        except PlaywrightTimeout:
            pass
    text = page.inner_text("body")
    assert "Traceback" not in text and "could not be read" not in text, text[:2000]
    assert page.evaluate("window.__xss") is None and dialogs == []  # no script from the data ran
    made = {sel: n for sel in INJECTED if (n := page.locator(sel).count())}
    assert made == {}, made
    # where the page shows a sample's text, it shows it literally
    if name in ("Explore", "Compare methods"):
        assert SCRIPT in text and "**xssmd**" in text, text[:3000]
    if name == "Jobs":
        assert SCRIPT in text and "**xssmsg**" in text, text[:3000]
