"""AppTest: the Explore page over a store holding the tiny run (3 method columns, k, URL state, fallbacks)."""

import shutil

import pandas as pd
import streamlit as st
from streamlit.testing.v1 import AppTest

from engine.paths import REPO_ROOT

PAGE = str(REPO_ROOT / "app_pages" / "explore.py")


def _unescaped(markdown: str) -> str:
    """Markdown text with its backslash escapes and HTML entities undone: the text a reader sees."""
    import html
    import re

    return html.unescape(re.sub(r"\\(.)", r"\1", markdown))


def _page(**params) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    for key, value in params.items():
        at.query_params[key] = str(value)
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def _ranked(at: AppTest) -> list[pd.DataFrame]:
    """The per-method ranked top-k tables (they are the only dataframes with a ``rank`` and ``train_id``)."""
    return [d.value for d in at.dataframe if {"rank", "train_id", "score"} <= set(d.value.columns)]


def test_default_view_shows_three_method_tables(store_env, tiny_data, charts):
    at = _page()
    assert at.multiselect(key="methods").value == ["datainf", "repsim", "gradsim"]
    k = at.slider(key="k").value
    assert k == tiny_data.k  # the run's k_default
    tables = _ranked(at)
    assert len(tables) == 3
    assert all(len(t) == k for t in tables)
    assert all(list(t["rank"]) == list(range(1, k + 1)) for t in tables)
    assert all(t.label.str.match(r"^[✓✗] ").all() for t in tables)
    assert [m.label for m in at.metric].count("Top-1 correct") == 3
    assert at.query_params["run"] == store_env
    assert at.query_params["methods"] == "datainf,repsim,gradsim"
    # the score distribution: for each method a box per training label (the same label vs the others)
    (fig,) = charts(at).values()
    boxes = [t for t in fig["data"] if t["type"] == "box"]
    assert sorted({y for t in boxes for y in t["y"]}) == sorted(tiny_data.train.label.unique())
    assert sum(len(t["x"]) for t in boxes) == 3 * len(tiny_data.train)  # every training sample, per method
    assert len(at.get("download_button")) == 2


def test_changing_k_changes_table_length(store_env):
    at = _page()
    at.slider(key="k").set_value(7).run()
    assert not at.exception
    assert [len(t) for t in _ranked(at)] == [7, 7, 7]
    assert at.query_params["k"] == "7"
    at.slider(key="k").set_value(1).run()
    assert [len(t) for t in _ranked(at)] == [1, 1, 1]


def test_query_params_are_honoured(store_env, tiny_data):
    at = _page(run=store_env, methods="lissa,exact", test=3, k=5, ckpt=1)
    assert at.multiselect(key="methods").value == ["lissa", "exact"]
    assert at.slider(key="k").value == 5
    assert at.selectbox(key="test").value == 3
    assert at.selectbox(key="ckpt").value == 1
    assert [len(t) for t in _ranked(at)] == [5, 5]
    test3 = tiny_data.test.loc[3]  # the test sample the URL asks for: its own prompt and label are shown
    assert any(c.value == test3.prompt for c in at.code)
    assert f"Label: {test3.label}" in [_unescaped(m.value).replace("**", "") for m in at.markdown]


def test_unknown_values_in_the_url_fall_back(store_env):
    at = _page(run="no-such-run", methods="bogus,datainf", test=999, k=-4, train=12345)
    assert at.selectbox(key="run").value == store_env
    assert at.multiselect(key="methods").value == ["datainf"]
    assert at.selectbox(key="test").value == 0
    assert at.slider(key="k").value == 1
    assert at.query_params["run"] == store_env
    assert at.query_params["test"] == "0"


def test_filters_and_method_choice(store_env, tiny_data):
    at = _page(test=3)
    other = sorted(set(tiny_data.test.label) - {tiny_data.test.loc[3].label})[0]  # a label test 3 does not have
    at.selectbox(key="test_label").set_value(other).run()
    assert not at.exception
    with_label = tiny_data.test.index[tiny_data.test.label == other].tolist()
    assert len(at.selectbox(key="test").options) == len(with_label)
    assert at.selectbox(key="test").value == with_label[0]  # the first test prompt with that label
    at.text_input(key="test_search").input("no prompt contains this").run()
    assert any("No test prompt matches" in w.value for w in at.warning)
    at.text_input(key="test_search").input("").run()
    at.selectbox(key="test_label").set_value("All labels").run()
    at.multiselect(key="methods").unselect("repsim").unselect("gradsim").run()
    assert len(_ranked(at)) == 1
    at.multiselect(key="methods").unselect("datainf").run()
    assert any("at least one method" in i.value for i in at.info)
    assert not at.exception


def test_drill_into_training_sample_and_dominant_table(store_env, tiny_data):
    at = _page(test=3, train=10, k=5)
    assert at.selectbox(key="train").value == 10
    drills = [d.value for d in at.dataframe if "test_id" in d.value.columns]
    assert len(drills) == 3
    assert all((d["rank"] <= 5).all() for d in drills)
    dominant = [d.value for d in at.dataframe if "n_top1" in d.value.columns]
    assert len(dominant) == 3
    for d in dominant:
        assert list(d.n_top1) == sorted(d.n_top1, reverse=True)
        assert d.n_top1.sum() == len(tiny_data.test)  # every test prompt has one top-1 training sample
    assert [m.label for m in at.metric].count("Most often ranked first") == 3



def test_switching_runs_keeps_a_valid_view(monkeypatch, tmp_path, tiny_run):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "run-a")
    shutil.copytree(tiny_run, runs / "run-b")
    monkeypatch.setenv("INFLUENCE_STORE", str(tmp_path / "s.duckdb"))
    monkeypatch.setenv("INFLUENCE_RUNS", str(runs))
    st.cache_resource.clear()
    at = _page(run="run-a", methods="exact", test=4, k=6)
    at.multiselect(key="methods").select("lissa").run()
    at.selectbox(key="run").set_value("run-b").run()
    assert not at.exception
    assert at.query_params["run"] == "run-b"
    assert at.multiselect(key="methods").value == ["exact", "lissa"]  # taken again from the URL
    assert at.selectbox(key="test").value == 4
    assert [len(t) for t in _ranked(at)] == [6, 6]


def test_empty_store_explains_itself(monkeypatch, tmp_path):
    monkeypatch.setenv("INFLUENCE_STORE", str(tmp_path / "s.duckdb"))
    monkeypatch.setenv("INFLUENCE_RUNS", str(tmp_path / "runs"))
    st.cache_resource.clear()
    at = _page()
    assert any("No runs yet" in i.value for i in at.info)
    assert not at.dataframe
