"""AppTest: the Compare methods and Dataset pages over a store holding the tiny run (URL state, fallbacks,
literal search, exports)."""

import streamlit as st

from engine.paths import REPO_ROOT

COMPARE = REPO_ROOT / "app_pages" / "compare_methods.py"
DATASET = REPO_ROOT / "app_pages" / "dataset.py"


# ---------------------------------------------------------------------------------------------- compare


def test_compare_page_renders_heatmaps_scatter_and_disagreement(store_env, open_page, tiny_data, charts):
    at = open_page(COMPARE)
    assert at.selectbox(key="run").value == store_env
    assert at.selectbox(key="ckpt").value == tiny_data.last_checkpoint  # the last checkpoint by default
    figs = charts(at)
    assert set(figs) == {"heat_spearman", "heat_overlap", "scatter"}
    methods = sorted(tiny_data.manifest["methods"])
    for key in ("heat_spearman", "heat_overlap"):  # method x method, every method of the run
        (heat,) = figs[key]["data"]
        assert sorted(heat["x"]) == sorted(heat["y"]) == methods
    # the scatter: one point per training sample (the two methods' scores for one test prompt)
    assert sum(len(t["x"]) for t in figs["scatter"]["data"]) == len(tiny_data.train)
    a, b = at.selectbox(key="method_a").value, at.selectbox(key="method_b").value
    assert a != b
    assert at.query_params["a"] == a and at.query_params["b"] == b
    table = at.dataframe[0].value
    assert len(table) == len(tiny_data.test) and {"test_id", "spearman", "prompt", "label"} <= set(table.columns)
    sp = table.spearman.dropna()
    assert sp.is_monotonic_increasing  # lowest agreement first
    assert ((sp >= -1 - 1e-9) & (sp <= 1 + 1e-9)).all()
    assert len(at.get("download_button")) == 2  # CSV + Parquet


def test_compare_page_on_a_run_written_before_per_prompt_agreement(monkeypatch, tmp_path, tiny_run, open_page):
    """A run folder without test_agreement.parquet (the older format): the disagreement table is recomputed from
    two prompts' score rows at a time, and equals the stored one of the same run."""
    import json
    import shutil

    import pandas as pd

    def table(data, older: bool):
        folder = data / "runs" / tiny_run.name
        shutil.copytree(tiny_run, folder)
        if older:
            (folder / "test_agreement.parquet").unlink()
            m = json.loads((folder / "manifest.json").read_text())
            del m["files"]["test_agreement.parquet"]
            (folder / "manifest.json").write_text(json.dumps(m))
        monkeypatch.setenv("INFLUENCE_STORE", str(data / "s.duckdb"))
        monkeypatch.setenv("INFLUENCE_RUNS", str(data / "runs"))
        st.cache_resource.clear()
        return open_page(COMPARE, a="gradsim", b="repsim").dataframe[0].value

    old, new = table(tmp_path / "old", True), table(tmp_path / "new", False)
    assert len(old) == len(new) and old.spearman.notna().any()
    pd.testing.assert_frame_equal(old, new, check_exact=False, rtol=1e-9)


def test_compare_page_honours_url_state(store_env, open_page, tiny_data):
    at = open_page(COMPARE, run=store_env, ckpt="1", a="exact", b="lissa", test="3")
    assert at.selectbox(key="ckpt").value == 1
    assert at.selectbox(key="method_a").value == "exact"
    assert at.selectbox(key="method_b").value == "lissa"
    assert at.selectbox(key="test").value == 3
    shown = next(m.value for m in at.markdown if "Test prompt #3" in m.value)
    # dataset text is escaped for markdown too: the '*' of test 3's prompt (a vowel-replacing grammar) stays
    # literal instead of turning the text italic
    import html
    import re

    prompt = tiny_data.test.loc[3].prompt
    body = shown.split("): ", 1)[1]
    assert html.unescape(re.sub(r"\\(.)", r"\1", body)) == prompt  # the prompt, as its reader sees it
    assert "*" in prompt and re.search(r"(?<!\\)\*", body) is None  # no bare '*' left to start italics
    # exact and lissa both approximate the same iHVP: their rows agree closely
    table = at.dataframe[0].value
    assert table.spearman.dropna().min() > 0.5


def test_compare_page_changing_a_method_updates_the_url(store_env, open_page):
    at = open_page(COMPARE, a="gradsim", b="repsim")
    at.selectbox(key="method_b").set_value("datainf").run()
    assert not at.exception
    assert at.query_params["b"] == "datainf"
    assert "datainf" in at.subheader[-1].value


def test_compare_page_unknown_values_in_url_fall_back(store_env, open_page, tiny_data):
    at = open_page(COMPARE, run="no-such-run", ckpt="99", a="nope", b="nope2", test="12345")
    assert at.selectbox(key="run").value == store_env
    assert at.selectbox(key="ckpt").value == tiny_data.last_checkpoint
    assert at.selectbox(key="method_a").value != at.selectbox(key="method_b").value
    assert at.selectbox(key="test").value == 0  # the first test prompt
    assert at.query_params["run"] == store_env


def test_compare_page_over_an_empty_store_says_so(monkeypatch, tmp_path, open_page):
    monkeypatch.setenv("INFLUENCE_STORE", str(tmp_path / "s.duckdb"))
    monkeypatch.setenv("INFLUENCE_RUNS", str(tmp_path / "runs"))
    st.cache_resource.clear()
    at = open_page(COMPARE)
    assert any("No runs yet" in i.value for i in at.info)


# ---------------------------------------------------------------------------------------------- dataset


def test_dataset_page_renders_samples_composition_and_topk(store_env, open_page, tiny_data, charts):
    at = open_page(DATASET)
    samples = at.dataframe[0].value
    n_train, n_test, k = len(tiny_data.train), len(tiny_data.test), tiny_data.k
    assert len(samples) == n_train + n_test and set(samples.split) == {"train", "test"}
    # the class composition: per split, a (horizontal) bar per label with its number of samples
    fig = charts(at)["composition"]
    for trace in fig["data"]:
        split = tiny_data.train if trace["name"] == "train" else tiny_data.test
        assert trace["orientation"] == "h"
        assert dict(zip(trace["y"], trace["x"])) == split.label.value_counts().to_dict()
    assert at.number_input(key="k").value == k  # the run's k_default
    top = at.dataframe[1].value
    assert len(top) == n_train
    assert top[f"n_top{k}"].sum() == n_test * k  # every test prompt has exactly k training samples in its top k
    assert top["n_top1"].sum() == n_test
    assert top[f"n_top{k}"].is_monotonic_decreasing
    # CSV + Parquet for the samples and the top-k counts (the self-influence section has its own)
    assert {b.key for b in at.get("download_button")} >= {"samples_csv", "samples_parquet", "topk_csv", "topk_parquet"}


def test_dataset_page_honours_url_state(store_env, open_page, tiny_data):
    label = sorted(tiny_data.train.label)[0]
    at = open_page(DATASET, split="train", label=label, method="repsim", k="5", ckpt="1")
    samples = at.dataframe[0].value
    assert len(samples) == (tiny_data.train.label == label).sum()
    assert set(samples.split) == {"train"} and set(samples.label) == {label}
    assert at.selectbox(key="method").value == "repsim"
    assert at.number_input(key="k").value == 5
    assert at.dataframe[1].value["n_top5"].sum() == len(tiny_data.test) * 5


def test_dataset_page_filter_changes_update_the_url(store_env, open_page):
    at = open_page(DATASET)
    at.selectbox(key="split").set_value("test").run()
    assert at.query_params["split"] == "test"
    assert set(at.dataframe[0].value.split) == {"test"}
    at.selectbox(key="method").set_value("gradsim").run()
    at.number_input(key="k").set_value(2).run()
    assert not at.exception
    assert at.query_params["method"] == "gradsim" and at.query_params["k"] == "2"
    assert "n_top2" in at.dataframe[1].value.columns


def test_dataset_search_with_percent_is_literal(store_env, open_page):
    at = open_page(DATASET, q="%")
    assert at.text_input(key="q").value == "%"
    assert len(at.dataframe[0].value) == 0  # no sample contains a literal '%'
    at = open_page(DATASET, q="_")
    assert len(at.dataframe[0].value) == 0


def test_dataset_search_finds_a_substring(store_env, open_page):
    at = open_page(DATASET, split="train")
    first = at.dataframe[0].value.prompt.iloc[0]
    word = str(first).split()[0]
    at.text_input(key="q").input(word).run()
    assert at.query_params["q"] == word
    found = at.dataframe[0].value
    assert len(found) >= 1
    assert found.apply(lambda r: word.lower() in (str(r.prompt) + str(r.response)).lower(), axis=1).all()


def test_dataset_page_unknown_values_in_url_fall_back(store_env, open_page, tiny_data):
    at = open_page(DATASET, run="no-such-run", split="bogus", label="nope", method="nope", k="100000")
    assert at.selectbox(key="run").value == store_env
    assert at.selectbox(key="split").value == "all"
    assert at.number_input(key="k").value == tiny_data.k
    assert len(at.dataframe[0].value) == len(tiny_data.train) + len(tiny_data.test)
