"""AppTest: the three analysis pages over a tiny run that has them, and over one that does not."""

import pytest
from store.paths import REPO_ROOT

IHVP = REPO_ROOT / "pages" / "4_iHVP_error.py"
CONVERGENCE = REPO_ROOT / "pages" / "5_Convergence.py"
RETRAINING = REPO_ROOT / "pages" / "6_Retraining.py"


def _readings(at) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith("- ")]


def test_ihvp_page_charts_reading_and_url_state(analysis_store_env, open_page):
    at = open_page(IHVP)
    assert len(at.get("plotly_chart")) == 3  # vs dimension, vs steps, vs damping
    text = " ".join(_readings(at))
    assert "DataInf" in text and "LiSSA run to convergence" in text
    assert "same per-matrix damping" in text and "damping choice alone" in text  # the fair reference
    assert any("diag(λ_l)" in c.value for c in at.caption)
    table = at.dataframe[0].value
    assert {"level", "dim", "method", "lambda_c", "rel_error"} <= set(table.columns)
    assert at.selectbox(key="pick_lc").value == 10.0  # the spec's damping (the step sweep's)
    at.selectbox(key="pick_lc").set_value(1.0).run()
    assert at.query_params["lc"] == "1.0"
    at.selectbox(key="pick_metric").set_value("spearman").run()
    assert not at.exception and at.query_params["metric"] == "spearman"


def test_ihvp_page_falls_back_on_a_bad_url(analysis_store_env, open_page):
    at = open_page(IHVP, lc="nonsense", metric="nope", level="nowhere")
    assert at.selectbox(key="pick_metric").value == "rel_error"
    assert at.selectbox(key="pick_level").value == "all"


def test_convergence_page(analysis_store_env, open_page):
    at = open_page(CONVERGENCE)
    assert len(at.get("plotly_chart")) == 5  # losses, generation, acc, coverage, stability
    text = " ".join(_readings(at))
    assert "Test loss goes from" in text and "most stable" in text
    assert list(at.dataframe[0].value.checkpoint) == [0, 1, 2]


def test_retraining_page(analysis_store_env, open_page):
    at = open_page(RETRAINING)
    charts = at.get("plotly_chart")
    # weight vs output, per-module ‖BA‖, LDS with interval, Spearman per kind, counterfactual, predicted vs actual
    assert len(charts) == 6
    text = " ".join(_readings(at))
    assert "Noise floor: 2 retrainings of the full set" in text
    assert "Linear datamodeling score over 4 random subsets" in text and "95 % interval" in text
    assert "Too few subsets for the interval to mean anything" in text  # M = 4: said plainly
    assert "Counterfactual check on 1 test prompt" in text
    assert "Kinds are kept apart" in text
    assert any("noise floor" in c.value for c in at.caption)
    assert any("contain the reference response, both lowercased" in c.value for c in at.caption)  # the rule, named
    groups = at.dataframe[0].value
    assert set(groups.kind) == {"noise", "single", "label", "random", "topk", "lds"}
    assert {"within_noise", "merged_norm_mean", "ba_norm_mean", "cached"} <= set(groups.columns)
    at.selectbox(key="pick_method").set_value("datainf").run()
    assert not at.exception and at.query_params["method"] == "datainf"
    at.selectbox(key="pick_output").set_value("kl_mean").run()
    assert not at.exception and at.query_params["output"] == "kl_mean"


def test_retraining_charts_have_short_titles_and_horizontal_module_bars(analysis_store_env, open_page):
    import json

    at = open_page(RETRAINING)
    figs = {c.proto.id: json.loads(c.proto.spec) for c in at.get("plotly_chart")}
    titles = [f["layout"]["title"]["text"] for f in figs.values()]
    assert all(len(t) <= 80 for t in titles), titles  # no title cut off at half of a 1280 px page
    bars = next(f for f in figs.values() if "‖BA‖" in f["layout"]["title"]["text"])
    assert all(tr["orientation"] == "h" for tr in bars["data"])  # long group names on the y axis, not rotated


@pytest.mark.parametrize("script", [IHVP, CONVERGENCE, RETRAINING])
def test_pages_explain_a_run_without_analyses(store_env, script, open_page):
    at = open_page(script)
    assert any("--analyses" in i.value for i in at.info)
    assert not at.get("plotly_chart")


def test_ihvp_charts_have_short_titles_and_readable_log_axes(analysis_store_env, open_page):
    import json

    at = open_page(IHVP)
    figs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    titles = [f["layout"]["title"]["text"] for f in figs]
    assert all(len(t) <= 60 for t in titles), titles
    steps = next(f for f in figs if f["layout"]["title"]["text"].startswith("LiSSA after T steps"))
    y = steps["layout"]["yaxis"]
    assert y["type"] == "log" and len(y["tickvals"]) >= 3 and len(y["ticktext"]) == len(y["tickvals"])
    assert steps["layout"]["xaxis"]["exponentformat"] == "power"
