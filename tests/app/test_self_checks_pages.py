"""AppTest: the Dataset page's self-influence list, and the home page's self-check figures and failure flag."""

import shutil

import pyarrow.parquet as pq
import streamlit as st
from streamlit.testing.v1 import AppTest

from engine.paths import REPO_ROOT
from engine.runfolder.runformat import table

DATASET = REPO_ROOT / "app_pages" / "dataset.py"


def test_dataset_page_ranks_self_influence(store_env, open_page, tiny_run):
    at = open_page(DATASET)
    # the catalog's default (engine.catalog.methods.default_methods) among the methods with self-influence
    assert at.selectbox(key="si_method").value == "datainf"
    assert "repsim" not in at.selectbox(key="si_method").options
    shown = next(d.value for d in at.dataframe if "score" in d.value.columns and "rank" in d.value.columns)
    si = pq.read_table(tiny_run / "self_influence.parquet").to_pandas()
    want = si[si.method == "datainf"].sort_values(["score", "train_id"], ascending=[False, True])
    assert shown.train_id.tolist() == want.train_id.head(len(shown)).tolist()
    at.selectbox(key="si_method").set_value("tracin").run()
    assert not at.exception and at.query_params["si"] == "tracin"


def _home(monkeypatch, tmp_path, runs):
    monkeypatch.setenv("INFLUENCE_STORE", str(tmp_path / "s.duckdb"))
    monkeypatch.setenv("INFLUENCE_RUNS", str(runs))
    st.cache_resource.clear()
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def test_home_shows_the_checks_and_flags_a_failing_run(monkeypatch, tmp_path, tiny_run):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / tiny_run.name)
    bad = runs / "bad-run"
    shutil.copytree(tiny_run, bad)
    rows = pq.read_table(bad / "checks.parquet").to_pylist()
    rows[0] = {**rows[0], "value": 0.42, "passed": False}  # the same number of rows: the folder stays complete
    pq.write_table(table("checks", rows), bad / "checks.parquet")
    at = _home(monkeypatch, tmp_path, runs)
    warning = next(w.value for w in at.warning if "self-checks fail" in w.value)
    assert "bad-run" in warning and tiny_run.name not in warning and "1 of" in warning
    titles = [e.label for e in at.expander]
    assert any("Numerical self-checks of" in t for t in titles)
    at.selectbox(key="run").set_value(tiny_run.name).run()
    assert any(f"Numerical self-checks of {tiny_run.name}: all passed" in e.label for e in at.expander)
    at.selectbox(key="run").set_value("bad-run").run()
    assert any("Numerical self-checks of bad-run: 1 FAILED" in e.label for e in at.expander)
    summary = next(d.value for d in at.dataframe if "worst" in d.value.columns)
    assert "0.42" in " ".join(summary.worst) and not summary.ok.all()
