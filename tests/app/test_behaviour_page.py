"""AppTest: the Behaviour page over the tiny run — query and control groups from the URL, the ranking equals the
mean of the score rows (read here from the run folder), the concentration and the group heatmap are drawn, bad
ids are reported."""

import numpy as np
import pyarrow.parquet as pq

from engine.paths import REPO_ROOT

PAGE = REPO_ROOT / "app_pages" / "behaviour.py"


def _run_matrix(folder, method, ck):
    t = pq.read_table(folder / "scores", filters=[("method", "=", method), ("checkpoint", "=", ck)]).to_pandas()
    S = np.full((t.test_id.max() + 1, t.train_id.max() + 1), np.nan)
    S[t.test_id, t.train_id] = t.score
    samples = pq.read_table(folder / "samples.parquet").to_pandas()
    return S, samples[samples.split == "test"].sort_values("sample_id")


def test_label_query_with_a_control_ranks_by_the_contrast(store_env, tiny_run, open_page):
    at = open_page(PAGE, method="gradsim", q_by="label", q="Capitalize Every Word", c_by="ids", c="0, 1")
    assert at.selectbox(key="method").value == "gradsim"
    assert at.multiselect(key="q_labels").value == ["Capitalize Every Word"]
    table = at.dataframe[0].value
    assert {"score", "query_mean", "control_mean", "label"} <= set(table.columns)
    S, tests = _run_matrix(tiny_run, "gradsim", 2)
    query = tests[tests.label == "Capitalize Every Word"].sample_id.tolist()
    assert query and not {0, 1} & set(query)
    want = S[query].mean(0) - S[[0, 1]].mean(0)
    got = table.set_index("train_id").score
    np.testing.assert_allclose(got.to_numpy(), want[got.index], rtol=1e-5, atol=1e-6 * np.abs(want).max())
    assert table.score.is_monotonic_decreasing
    assert len(at.get("plotly_chart")) == 3  # cumulative curve, labels, group heatmap
    assert any("Top 10 hold" in m.label for m in at.metric)
    assert any("minus control" in m.value for m in at.markdown)


def test_bad_ids_and_the_group_view_options(store_env, open_page):
    at = open_page(PAGE, q_by="ids", q="2, 999", by="label", metric="mean")
    assert any("no test sample 999" in w.value for w in at.warning)
    assert any("query group is empty" in i.value for i in at.info)
    at.text_input(key="q_ids").set_value("2-4").run()
    assert not at.exception and at.query_params["q"] == "2-4"
    assert len(at.dataframe[0].value) == 30 and at.radio(key="metric").value == "mean"
    assert {"score", "label"} <= set(at.dataframe[0].value.columns)  # no control: the score is the query mean,
    assert not {"query_mean", "control_mean"} & set(at.dataframe[0].value.columns)  # shown once
    assert len(at.get("plotly_chart")) == 3
