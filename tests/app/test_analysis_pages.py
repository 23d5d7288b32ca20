"""AppTest: the three analysis pages over a tiny run that has them, and over one that does not."""

import pyarrow.parquet as pq
import pytest

from engine.paths import REPO_ROOT

IHVP = REPO_ROOT / "app_pages" / "ihvp_error.py"
CONVERGENCE = REPO_ROOT / "app_pages" / "convergence.py"
RETRAINING = REPO_ROOT / "app_pages" / "retraining.py"


def _readings(at) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith("- ")]


def test_ihvp_page_charts_reading_and_url_state(analysis_store_env, open_page, analysis_data, charts):
    at = open_page(IHVP)
    figs = charts(at)
    assert set(figs) == {"by_dim", "by_steps", "by_damping"}
    rows = analysis_data.table("ihvp_error")
    sweep = rows[rows.method == "lissa_steps"]
    lc = float(sweep.lambda_c.iloc[0])  # the page starts at the damping of the LiSSA step sweep
    at_lc = rows[(rows.lambda_c == lc) & (rows.method != "lissa_steps")]
    # vs dimension: a line per approximation, through the subsets it was measured on, smallest first
    lines = figs["by_dim"]["data"]
    assert len(lines) == at_lc.method.nunique()
    assert sorted(len(t["x"]) for t in lines) == sorted(at_lc.groupby("method").size())
    assert sorted({x for t in lines for x in t["x"]}) == sorted(at_lc.dim.unique())
    # vs steps, on the largest subset: the sweep's step counts (T > 0 on the log axis of the relative error)
    largest = rows.sort_values("dim").level.iloc[-1]
    steps = sweep[(sweep.level == largest) & (sweep.iterations > 0)]
    assert sorted(figs["by_steps"]["data"][0]["x"]) == sorted(steps.iterations)
    # vs damping: every damping of the sweep
    assert {x for t in figs["by_damping"]["data"] for x in t["x"]} == set(rows[rows.level == largest].lambda_c)
    text = " ".join(_readings(at))
    assert "DataInf" in text and "LiSSA run to convergence" in text
    assert "same per-matrix damping" in text and "damping choice alone" in text  # the fair reference
    assert any("diag(λ_l)" in c.value for c in at.caption)
    table = at.dataframe[0].value
    assert {"level", "dim", "method", "lambda_c", "rel_error"} <= set(table.columns)
    assert at.selectbox(key="pick_lc").value == lc
    at.selectbox(key="pick_lc").set_value(1.0).run()
    assert at.query_params["lc"] == "1.0"
    at.selectbox(key="pick_metric").set_value("spearman").run()
    assert not at.exception and at.query_params["metric"] == "spearman"


def test_ihvp_page_falls_back_on_a_bad_url(analysis_store_env, open_page):
    at = open_page(IHVP, lc="nonsense", metric="nope", level="nowhere")
    assert at.selectbox(key="pick_metric").value == "rel_error"
    assert at.selectbox(key="pick_level").value == "all"


def test_convergence_page(analysis_store_env, open_page, analysis_data, charts):
    at = open_page(CONVERGENCE)
    figs = charts(at)
    assert set(figs) == {"loss", "generation", "acc", "drift", "step_loss"}  # Acc@1, Coverage@k: panels of one
    steps = pq.read_table(analysis_data.folder / "train_loss.parquet").column("step").to_pylist()
    assert sorted(figs["step_loss"]["data"][0]["x"]) == sorted(steps)  # the fine-tuning loss, every optimizer step
    epochs = analysis_data.manifest["spec"]["train"]["epochs"]
    every = list(range(epochs + 1))  # checkpoint 0 (the LoRA initialisation) and one per epoch
    for key in ("loss", "generation"):  # two lines each: train/test loss, generation accuracy/behaviour
        assert [t["x"] for t in figs[key]["data"]] == [every, every]
    methods = sorted(analysis_data.manifest["methods"])
    # a line per method and panel through its scored checkpoints
    assert sorted(t["name"] for t in figs["acc"]["data"]) == sorted(methods * 2)
    assert all(list(t["x"]) == analysis_data.manifest["checkpoints"] for t in figs["acc"]["data"])
    # one pair of scored checkpoints: a bar per method (vs the previous checkpoint)
    assert sorted(figs["drift"]["data"][0]["y"]) == methods
    text = " ".join(_readings(at))
    assert "Test loss goes from" in text and "most stable" in text
    assert list(at.dataframe[0].value.checkpoint) == every


def test_retraining_page(analysis_store_env, open_page, analysis_data, charts):
    at = open_page(RETRAINING)
    figs = charts(at)
    assert set(figs) == {"param_vs_output", "ba_norms", "lds", "kind_spearman", "counterfactual", "pred_vs_actual"}
    groups = analysis_data.table("retrain_groups")
    # a point per retrained model but the identity check and the second-seed repeats (noise reseeds included), a
    # bar per retrained model; a point per method on the LDS chart
    plotted = groups[~groups.kind.isin(["identity", "repeat"])]
    assert sum(len(t["x"]) for t in figs["param_vs_output"]["data"]) == plotted.mean_abs_dloss.notna().sum()
    assert sum(len(t["y"]) for t in figs["ba_norms"]["data"]) == len(groups)
    lds = analysis_data.table("retrain_lds")
    assert sorted(figs["lds"]["data"][0]["y"]) == sorted(lds.method)
    kinds = analysis_data.table("retrain_methods")
    assert len(figs["kind_spearman"]["data"][0]["z"]) == kinds.method.nunique()  # a row per method
    # the first method (the page's default): a point per (retraining with a removal, test prompt) it predicted
    preds = analysis_data.table("retrain_predictions")
    first = sorted(kinds.method.unique())[0]
    assert sum(len(t["x"]) for t in figs["pred_vs_actual"]["data"]) == (preds.method == first).sum()
    text = " ".join(_readings(at))
    assert "Noise floor: 2 retrainings of the full set" in text
    assert "Linear datamodeling score over 4 random subsets" in text and "95 % interval" in text
    assert "Too few subsets for the interval to mean anything" in text  # M = 4: said plainly
    assert "Counterfactual check on 1 test prompt" in text
    assert "row-mean control" in text and "within one removal size" in text
    assert "Check passed: retraining with nothing removed reproduces the original adapter bit for bit" in text
    assert "Repeated at a second data-order seed" in text and "Ranked among 19 random" in text
    # exact metagradients on 3 prompts: the decomposition's reading and table
    assert "On the 3 test prompts with exact metagradients (metagrad)" in text and "leaves" in text
    (dec,) = [d.value for d in at.dataframe if "what the score assumes" in d.value.columns]
    assert list(dec.method[:4]) == ["exact", "datainf", "tracin", "metagrad"] and "gradsim" in set(dec.method)
    assert any("Prompts with metagrad (test ids)" in c.value for c in at.caption)
    assert any("noise floor" in c.value for c in at.caption)
    assert any("contain the reference response, both lowercased" in c.value for c in at.caption)  # the rule, named
    (groups,) = [d.value for d in at.dataframe if "kind" in d.value.columns]
    assert set(groups.kind) == {"identity", "noise", "single", "label", "random", "topk", "lds", "repeat"}
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
