"""AppTest: the Jobs page queues only valid specs, lists jobs, and honours read-only mode and sign-in."""

import json

import pytest
from streamlit.testing.v1 import AppTest

from engine.jobs import queue as jobs
from engine.paths import REPO_ROOT
from ui.navigation import PAGES

JOBS = REPO_ROOT / "app_pages" / "jobs.py"
HOME = REPO_ROOT / "app.py"


@pytest.fixture
def env(jobs_env):
    return jobs_env


def _run(script=JOBS, secrets=None, user=None) -> AppTest:
    at = AppTest.from_file(str(script), default_timeout=120)
    for k, v in (secrets or {}).items():
        at.secrets[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def _shown(markdown: str) -> str:
    """Markdown as its reader sees it: backslash escapes and HTML entities undone."""
    import html
    import re

    return html.unescape(re.sub(r"\\(.)", r"\1", markdown))


def _submit(at, **fields):
    for key, value in fields.items():
        at.text_input(key=key).input(value)
    at.get("form_submit_button")[0].click()
    at.run()
    assert not at.exception, at.exception
    return at


def test_a_valid_spec_is_queued_as_a_job(env):
    at = _submit(_run(), f_name="from-the-form")
    assert any("Queued job" in s.value for s in at.success), [e.value for e in at.error]
    (job,) = jobs.list_jobs(env / "jobs")
    assert job["status"] == "queued" and job["run"] == "from-the-form"
    spec = json.loads((env / "jobs" / job["id"] / "spec.json").read_text())
    assert spec["model"]["name"] == "tiny" and spec["task"]["name"] == "grammars"
    assert spec["analysis"]["stages"] == ["ihvp", "convergence"]
    assert "from-the-form" in " ".join(_shown(m.value) for m in at.markdown)  # the queue lists it


def test_an_invalid_spec_is_refused_and_nothing_is_queued(env):
    at = _run()
    at.multiselect(key="f_methods").set_value([])
    at = _submit(at, f_name="ok-name")
    assert any("scoring.methods" in e.value for e in at.error)
    assert jobs.job_ids(env / "jobs") == []
    at = _submit(_run(), f_name="../escape")
    assert any("run name" in e.value for e in at.error)
    assert jobs.job_ids(env / "jobs") == []


def test_uploaded_dataset_without_a_dataset_is_refused(env):
    at = _run()
    at.radio(key="data_source").set_value("uploaded dataset").run()
    at = _submit(at)
    assert any("no dataset chosen" in e.value for e in at.error)
    assert jobs.job_ids(env / "jobs") == []


def test_cancel_and_requeue_buttons(env, tiny_spec):
    from engine.spec.load import spec_from_dict

    job = jobs.submit(env / "jobs", spec_from_dict({**tiny_spec, "name": "queued-one"}))
    at = _run()
    at.button(key=f"cancel_{job}").click().run()
    assert jobs.state(env / "jobs", job)["status"] == "cancelled"
    at.button(key=f"requeue_{job}").click().run()
    assert jobs.state(env / "jobs", job)["status"] == "queued"


def test_read_only_mode_turns_submission_off(env, monkeypatch, tiny_spec):
    from engine.spec.load import spec_from_dict

    monkeypatch.setenv("INFLUENCE_READ_ONLY", "1")
    job = jobs.submit(env / "jobs", spec_from_dict({**tiny_spec, "name": "listed"}))
    at = _run()
    assert any("read-only" in i.value for i in at.info)
    assert not at.get("form_submit_button") and not at.button  # no form, no cancel buttons
    assert "listed" in " ".join(_shown(m.value) for m in at.markdown)  # browsing the queue still works
    home = _run(HOME)
    assert not home.get("button") and "read-only" in " ".join(c.value for c in home.caption)
    assert jobs.state(env / "jobs", job)["status"] == "queued"


AUTH = {"auth": {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32,
                 "client_id": "id", "client_secret": "secret",
                 "server_metadata_url": "http://localhost:9/.well-known/openid-configuration"}}


# the entry point and every page of its navigation (ui.navigation), so a new page cannot be missed
APP_PAGES = [HOME, *(REPO_ROOT / p.file for p in PAGES)]


def _leaves(node):
    """Every element the page rendered (main area, sidebar, dialogs), depth first."""
    children = getattr(node, "children", None)
    if children is None:
        yield node
        return
    for child in children.values():
        yield from _leaves(child)


def test_the_page_list_is_the_apps():
    assert sorted(APP_PAGES[1:]) == sorted(p for p in (REPO_ROOT / "app_pages").glob("*.py") if p.name != "__init__.py")  # every page file is navigable
    assert len(APP_PAGES) >= 9 and all("require_login()" in p.read_text() for p in APP_PAGES)
    assert "st.navigation(" in HOME.read_text()


@pytest.mark.parametrize("script", APP_PAGES, ids=lambda p: p.stem)
def test_sign_in_gates_every_page_when_configured(store_env, monkeypatch, tmp_path, tiny_spec, script):
    """With sign-in configured, an anonymous visitor of any page sees a title, a note and the sign-in button:
    none of the store's runs or samples, the queue's jobs, or any widget, table or chart."""
    import pyarrow.parquet as pq

    from engine.spec.load import spec_from_dict

    monkeypatch.delenv("INFLUENCE_JOBS", raising=False)
    jobs.submit(tmp_path / "jobs", spec_from_dict({**tiny_spec, "name": "queued-secret"}))
    samples = pq.read_table(tmp_path / "runs" / store_env / "samples.parquet").to_pandas()
    at = _run(script, secrets=AUTH)
    leaves = list(_leaves(at._tree))
    assert sorted({e.type for e in leaves}) == ["button", "info", "title"], [e.type for e in leaves]
    assert [b.label for b in at.button] == ["Sign in"]
    shown = " ".join(str(getattr(e, "proto", "")) for e in leaves)
    for secret in (store_env, "queued-secret", *samples.prompt.head(5)):
        assert secret not in shown, secret


def _upload(at, filename, content: bytes, name: str) -> AppTest:
    at.file_uploader(key="upload_file").upload(filename, content).run()
    at.text_input(key="upload_name").input(name)
    at.button(key="upload_keep").click().run()
    assert not at.exception, at.exception
    return at


def test_upload_valid_then_queue_a_job_on_it(env):
    rows = [{"prompt": f"p{i}", "response": f"r{i % 2}", "label": f"L{i % 2}", "split": "train" if i < 8 else "test"}
            for i in range(10)]
    at = _upload(_run(), "mine.jsonl", "\n".join(json.dumps(r) for r in rows).encode(), "mine")
    assert any("Kept dataset mine" in s.value for s in at.success), [e.value for e in at.error]
    assert (env / "datasets" / "mine" / "train.parquet").is_file()
    at.radio(key="data_source").set_value("uploaded dataset").run()
    assert at.selectbox(key="f_dataset").value == "mine"
    at = _submit(at, f_name="on-mine")
    (job,) = jobs.list_jobs(env / "jobs")
    spec = json.loads((env / "jobs" / job["id"] / "spec.json").read_text())
    assert spec["task"] == {**spec["task"], "name": "file", "path": str(env / "datasets" / "mine")}


def test_a_bad_upload_is_reported_and_not_kept(env):
    at = _upload(_run(), "bad.csv", b"prompt,response\nhello,world\n", "bad")
    assert any("Not kept: bad.csv: missing column(s)" in e.value for e in at.error), [e.value for e in at.error]
    assert not (env / "datasets").exists() or list((env / "datasets").iterdir()) == []


def test_a_broken_job_and_a_crashed_job_are_shown_with_why(env, tiny_spec):
    """A job whose state file is damaged is listed as broken, naming its folder; a job whose run died with a
    traceback shows the exception line and, in its log, the traceback; it can be re-queued."""
    from engine.spec.load import spec_from_dict

    jobs_dir = env / "jobs"
    broken = jobs.submit(jobs_dir, spec_from_dict({**tiny_spec, "name": "broken-one"}))
    state = jobs_dir / broken / "state.json"
    state.write_bytes(state.read_bytes()[:20])
    crashed = jobs.submit(jobs_dir, spec_from_dict({**tiny_spec, "name": "crashed-one"}))
    assert jobs.claim(jobs_dir, "w") == crashed
    log = "loading\nTraceback (most recent call last):\n  File \"x.py\", line 1, in f\nMemoryError: out of memory\n"
    (jobs_dir / crashed / "log.txt").write_text(log)
    st_crashed = json.loads((jobs_dir / crashed / "state.json").read_text())
    st_crashed.update(status="failed", returncode=1, message=jobs.failure_message(log, 1))
    (jobs_dir / crashed / "state.json").write_text(json.dumps(st_crashed))
    at = _run()
    cards = {m.value.split("job ", 1)[-1].split(" ", 1)[0]: _shown(m.value) for m in at.markdown
             if "<small>job " in m.value}
    assert set(cards) == {broken, crashed}
    assert "broken" in cards[broken] and f"job folder {broken}: state.json is unreadable" in cards[broken]
    assert "failed" in cards[crashed] and "<code>MemoryError: out of memory</code>" in cards[crashed]
    assert any("Traceback (most recent call last)" in c.value and "MemoryError" in c.value for c in at.code)
    assert at.button(key=f"requeue_{crashed}") and not any(b.key.endswith(broken) for b in at.button)


def test_workers_panel_says_when_no_worker_runs_and_shows_live_ones(env, tiny_spec):
    import socket

    from engine.jobs import workers
    from engine.spec.load import spec_from_dict

    jobs.submit(env / "jobs", spec_from_dict({**tiny_spec, "name": "waiting-one"}))
    at = _run()
    assert any("No worker is running" in w.value for w in at.warning), [w.value for w in at.warning]
    assert any(f"engine worker --store {env / 's.duckdb'}" in c.value for c in at.code)
    card = " ".join(_shown(m.value) for m in at.markdown if "waiting-one" in _shown(m.value))
    assert "no worker is running" in card and "waiting for a worker" not in card
    with workers.register(env / "jobs", device="cuda (1 GPU: Test GPU)"):
        at = _run()
        (alive,) = [s.value for s in at.success]
        assert alive.startswith("**1 worker alive** (0 busy)") and socket.gethostname() in alive
        assert "cuda (1 GPU: Test GPU)" in alive
        assert not any("No worker" in w.value for w in at.warning)
        card = " ".join(_shown(m.value) for m in at.markdown if "waiting-one" in _shown(m.value))
        assert "waiting for a worker" in card
    at = _run()  # the worker stopped: its file is gone, the page says so again
    assert any("No worker is running" in w.value for w in at.warning)
