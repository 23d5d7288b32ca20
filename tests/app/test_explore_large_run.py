"""AppTest: Explore on a run with more training samples than its choosers and charts list one by one
(synthetic, 20 test prompts x 2500 training samples): the drill-down chooser lists the ranked samples and a search
finds any other; the score distribution is drawn on request, as box statistics computed from every score."""

import numpy as np
import pytest
import streamlit as st

from engine.paths import REPO_ROOT

PAGE = str(REPO_ROOT / "app_pages" / "explore.py")
N_TEST, N_TRAIN = 20, 2500


@pytest.fixture(scope="module")
def large_run(tmp_path_factory):
    from bench.store import synthetic_run

    runs = tmp_path_factory.mktemp("large") / "runs"
    synthetic_run(runs, "large", N_TEST, N_TRAIN, methods=("gradsim", "repsim"), shard=1000)
    return runs


@pytest.fixture
def large_env(monkeypatch, tmp_path, large_run):
    monkeypatch.setenv("INFLUENCE_STORE", str(tmp_path / "s.duckdb"))
    monkeypatch.setenv("INFLUENCE_RUNS", str(large_run))
    st.cache_resource.clear()
    return "large"


def test_drill_chooser_lists_the_ranked_samples_and_searches_the_rest(large_env, open_page):
    at = open_page(PAGE, test="3", k="5")
    ranked = [d.value for d in at.dataframe if {"rank", "train_id", "score"} <= set(d.value.columns)]
    assert len(ranked) == 2
    listed = at.selectbox(key="train").options
    top = list(dict.fromkeys(int(i) for t in ranked for i in t.train_id))
    assert len(listed) == len(top) and all(o.startswith(f"#{i} · ") for o, i in zip(listed, top))
    assert at.selectbox(key="train").value == top[0]  # the first method's top-ranked sample
    at.text_input(key="train_search").input("2345").run()  # an id: that sample first, then prompts with "2345"
    assert not at.exception
    assert at.selectbox(key="train").options[0].startswith("#2345 · label5 · train prompt 2345 about")
    at.selectbox(key="train").set_value(2345).run()
    assert at.query_params["train"] == "2345"
    assert any("Test prompts that rank training sample 2345" in m.value for m in at.markdown)
    at.text_input(key="train_search").input("no training prompt says this").run()
    assert any("No training sample matches" in w.value for w in at.warning) and not at.exception


def test_distribution_on_request_as_box_statistics(large_env, open_page, charts):
    import store

    at = open_page(PAGE, test="3", methods="gradsim,repsim")
    assert not charts(at)  # not drawn at first on a run this size
    assert at.toggle(key="dist").value is False and at.query_params["dist"] == "0"
    at.toggle(key="dist").set_value(True).run()
    assert not at.exception and at.query_params["dist"] == "1"
    (fig,) = charts(at).values()
    boxes = [t for t in fig["data"] if t["type"] == "box"]
    assert sorted(y for t in boxes for y in t["y"]) == sorted(f"label{i}" for i in range(10) for _ in "ab")  # 2 panels
    assert [a["text"] for a in fig["layout"]["annotations"]] == ["gradsim", "repsim"]  # a panel each
    assert all("x" not in t for t in boxes)  # statistics, not every score
    # the quartiles are those of every training sample's score for this prompt
    from ui.common import get_store

    row = store.score_row(get_store().cursor(), "large", "gradsim", 1, 3)  # the page's own store
    label0 = row[np.arange(N_TRAIN) % 10 == 0].astype(np.float64)
    box = next(t for t in boxes if "label0" in t["y"] and t["xaxis"] == "x")  # gradsim's panel
    i = box["y"].index("label0")
    assert np.isclose(box["median"][i], np.median(label0)) and np.isclose(box["q1"][i], np.quantile(label0, 0.25))
    points = [t for t in fig["data"] if t["type"] == "scatter"]
    shown = sum(len(t["x"]) for t in points)
    assert 0 < shown < 2 * N_TRAIN / 10  # only the scores beyond the whiskers go as points
