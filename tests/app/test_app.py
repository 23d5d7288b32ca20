"""AppTest: the home page over an empty store and over a store holding the tiny run."""

import shutil

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from engine.paths import REPO_ROOT


def _app(monkeypatch, db_path):
    monkeypatch.setenv("INFLUENCE_STORE", str(db_path))
    monkeypatch.setenv("INFLUENCE_RUNS", str(db_path.parent / "runs"))
    st.cache_resource.clear()
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def test_empty_store_explains_and_offers_the_demo(monkeypatch, tmp_path):
    at = _app(monkeypatch, tmp_path / "s.duckdb")
    assert any("store is empty" in i.value for i in at.info)
    assert any("engine demo" in c.value for c in at.code)
    assert [m.value for m in at.metric][:1] == ["0"]


def test_store_with_a_run_shows_runs_and_leaderboard(monkeypatch, tmp_path, tiny_run):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / tiny_run.name)
    at = _app(monkeypatch, tmp_path / "s.duckdb")  # the app ingests the run folder it finds
    assert at.metric[0].value == "1"
    assert at.selectbox(key="run").value == tiny_run.name
    # the run's leaderboard: the table with a row per (method, checkpoint) (the runs list and the self-checks
    # come before it)
    board = next(d.value for d in at.dataframe if {"method", "acc"} <= set(d.value.columns))
    assert {"gradsim", "datainf", "lissa", "exact", "repsim", "random", "bm25"} <= set(board.method)
    assert any("chance level" in m.value for m in at.markdown)


def test_corrupt_store_is_rebuilt_from_run_folders(monkeypatch, tmp_path, tiny_run):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / tiny_run.name)
    db = tmp_path / "s.duckdb"
    db.write_bytes(b"this is not a duckdb file" * 100)
    at = _app(monkeypatch, db)
    assert at.metric[0].value == "1"


@pytest.mark.slow
def test_demo_button_queues_the_demo_as_a_job_and_starts_a_worker_for_it(monkeypatch, tmp_path):
    import json
    import time

    from engine.jobs import queue as jobs
    from engine.jobs import workers

    db = tmp_path / "s.duckdb"
    at = _app(monkeypatch, db)
    at.radio(key="demo_model").set_value("tiny").run()
    at.radio(key="demo_analyses").set_value("ihvp,convergence").run()
    at.button(key="run_demo").click().run()
    assert not at.exception, at.exception
    (job,) = jobs.list_jobs(tmp_path / "jobs")  # an ordinary job: the Jobs page lists it
    assert job["run"] == "demo-tiny"
    assert any("demo-tiny" in i.value for i in at.info)  # the home page follows it
    deadline = time.time() + 300
    while jobs.state(tmp_path / "jobs", job["id"])["status"] in ("queued", "running") and time.time() < deadline:
        time.sleep(1)
    st_ = jobs.state(tmp_path / "jobs", job["id"])
    assert st_["status"] == "done", (st_, jobs.log_tail(tmp_path / "jobs", job["id"]))
    assert "worker --once" in (tmp_path / "worker.log").read_text()  # the worker the app started for it
    at.run()
    assert at.metric[0].value == "1"
    assert at.selectbox(key="run").value == "demo-tiny"
    manifest = json.loads((tmp_path / "runs" / "demo-tiny" / "manifest.json").read_text())
    assert manifest["analyses"] == ["ihvp", "convergence"]
    deadline = time.time() + 30  # the --once worker exits when the queue is empty
    while workers.alive(tmp_path / "jobs") and time.time() < deadline:
        time.sleep(0.5)
    assert workers.alive(tmp_path / "jobs") == []


def test_harmful_demo_is_queued_and_followed_and_can_be_cancelled(monkeypatch, tmp_path, tiny_run):
    """With a worker alive the launcher starts none; the queued job is the harmful_s demo; Cancel cancels it."""
    import json

    from engine.jobs import queue as jobs
    from engine.jobs import workers

    shutil.copytree(tiny_run, tmp_path / "runs" / tiny_run.name)
    with workers.register(tmp_path / "jobs", device="cpu (test)"):
        at = _app(monkeypatch, tmp_path / "s.duckdb")
        at.radio(key="demo_task").set_value("harmful_s").run()
        at.radio(key="demo_model").set_value("tiny").run()
        at.button(key="run_demo").click().run()
        assert not at.exception, at.exception
        (job,) = jobs.list_jobs(tmp_path / "jobs")
        spec = json.loads((tmp_path / "jobs" / job["id"] / "spec.json").read_text())
        assert job["run"] == "demo-harmful_s-tiny" and spec["task"]["name"] == "harmful_s"
        assert spec["analysis"]["stages"] == ["ihvp", "convergence"]
        assert not (tmp_path / "worker.log").exists()  # a worker is alive: none was started
        assert any("demo-harmful_s-tiny" in i.value for i in at.info)
        at.button(key="demo_cancel").click().run()
    assert jobs.state(tmp_path / "jobs", job["id"])["status"] == "cancelled"
    at.run()
    assert any("cancelled" in c.value for c in at.caption)  # the launcher says how the last demo ended


def test_a_queued_demo_without_a_worker_says_so(monkeypatch, tmp_path):
    from engine.jobs import queue as jobs
    from engine.spec.presets import demo_spec

    jobs.submit(tmp_path / "jobs", demo_spec("tiny"))
    at = _app(monkeypatch, tmp_path / "s.duckdb")
    assert any("no worker is running" in w.value for w in at.warning)
    assert at.button(key="demo_start_worker").label == "Start a worker"


def test_the_reading_says_whether_the_best_lead_is_within_noise(monkeypatch, tmp_path, tiny_run):
    """The home page's noise sentence for the best method against the runner-up, with the paired bootstrap interval
    of the per-prompt top-1 hits, each recomputed here from the run's score files (highest score first, ties to
    the lower train id)."""
    import numpy as np
    import pyarrow.parquet as pq

    from engine.evaluation.metrics import paired_bootstrap_ci
    from ui.readings import fmt

    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / tiny_run.name)
    at = _app(monkeypatch, tmp_path / "s.duckdb")
    samples = pq.read_table(tiny_run / "samples.parquet").to_pandas()
    train = samples[samples.split == "train"].set_index("sample_id").label
    test = samples[samples.split == "test"].set_index("sample_id").label
    scores = pq.read_table(tiny_run / "scores").to_pandas()
    last = scores[scores.checkpoint == scores.checkpoint.max()]
    top1 = {}
    for method, rows in last.groupby("method"):
        hits = []
        for test_id, row in rows.groupby("test_id"):
            best = max(zip(row.score, row.train_id), key=lambda st: (st[0], -st[1]))[1]
            hits.append(float(train[best] == test[test_id]))
        top1[method] = np.array(hits)
    order = sorted(top1, key=lambda m: (-top1[m].mean(), m))
    a, b = order[0], order[1]
    lo, hi = paired_bootstrap_ci(top1[a], top1[b])
    text = " ".join(m.value for m in at.markdown)
    assert f"**{a}** vs **{b}**: Acc@1 +{fmt(top1[a].mean() - top1[b].mean(), 2)}, 95 % interval " \
           f"[{fmt(lo, 2)}, {fmt(hi, 2)}] over the {len(test)} prompts" in text
    assert ("within noise" in text) == (lo <= 0 <= hi)
