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
    assert len(at.get("plotly_chart")) == 4  # losses, generation, acc + coverage, stability
    text = " ".join(_readings(at))
    assert "Test loss goes from" in text and "most stable" in text
    assert list(at.dataframe[0].value.checkpoint) == [0, 1, 2]


def test_retraining_page(analysis_store_env, open_page):
    at = open_page(RETRAINING)
    assert len(at.get("plotly_chart")) == 4
    text = " ".join(_readings(at))
    assert "bit for bit" in text  # the control reproduces the original adapter
    assert "Spearman" in text
    groups = at.dataframe[0].value
    assert set(groups.kind) == {"none", "single", "label", "random"}
    at.selectbox(key="pick_method").set_value("datainf").run()
    assert not at.exception and at.query_params["method"] == "datainf"
    at.selectbox(key="pick_output").set_value("kl_mean").run()
    assert not at.exception and at.query_params["output"] == "kl_mean"


@pytest.mark.parametrize("script", [IHVP, CONVERGENCE, RETRAINING])
def test_pages_explain_a_run_without_analyses(store_env, script, open_page):
    at = open_page(script)
    assert any("--analyses" in i.value for i in at.info)
    assert not at.get("plotly_chart")
