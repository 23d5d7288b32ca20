"""metagrad in a whole run's retraining analysis (the tiny run of the analysis pages): its prompts, its stored
scores, its rows beside every method's, the decomposition and its cost in the timings. The numbers themselves are
checked against finite differences in tests/engine/model/test_replay.py; here: that the run wires them where they
belong."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from engine.analysis.metagrad import WithRows, metagrad_prompts
from engine.analysis.retrain import cf_prompts
from engine.catalog.analyses import DECOMPOSITION_PARTS


def _table(folder, name):
    return pq.read_table(folder / f"{name}.parquet").to_pandas()


def test_prompts_extend_the_counterfactuals_prompts():
    labels = [f"l{j % 4}" for j in range(20)]
    assert metagrad_prompts(labels, 6, 3)[:2] == cf_prompts(labels, 2, 3)
    assert metagrad_prompts(labels, 0, 3) == [] and len(set(metagrad_prompts(labels, 6, 3))) == 6


def test_the_run_keeps_metagrad_beside_every_method(tiny_analysis_run):
    folder = tiny_analysis_run
    manifest = json.loads((folder / "manifest.json").read_text())
    a = manifest["spec"]["analysis"]
    n_mg = a["metagrad_prompts"]
    assert n_mg > a["cf_prompts"] > 0
    mg = _table(folder, "retrain_metagrad")
    samples = _table(folder, "samples")
    n_train = int((samples.split == "train").sum())
    test_labels = samples[samples.split == "test"].sort_values("sample_id").label.tolist()
    prompts = cf_prompts(test_labels, n_mg, manifest["spec"]["train"]["seed"])
    assert sorted(mg.test_id.unique()) == sorted(prompts) and len(mg) == n_mg * n_train
    assert np.isfinite(mg.score).all() and (mg.score != 0).any()
    lds = _table(folder, "retrain_lds").set_index("method")
    assert {"gradsim", "datainf", "tracin", "exact", "metagrad"} == set(lds.index)
    assert lds.loc["metagrad", "n_test"] <= n_mg < lds.loc["datainf", "n_test"]
    cf = _table(folder, "retrain_counterfactual")
    first = cf_prompts(test_labels, a["cf_prompts"], manifest["spec"]["train"]["seed"])
    assert sorted(cf[cf.method == "metagrad"].test_id) == first  # checked on the counterfactual's own prompt
    preds = _table(folder, "retrain_predictions")
    assert set(preds[preds.method == "metagrad"].test_id) == set(prompts)
    dec = _table(folder, "retrain_decomposition")
    assert set(dec.method) == set(lds.index) and (dec.n_prompts == n_mg).all()
    assert dict(zip(dec.method, dec.part))["metagrad"] == DECOMPOSITION_PARTS["metagrad"]
    t = manifest["timings"]
    assert t["metagrad_prompts"] == n_mg and t["metagrad_reproduced"] == 1.0 and t["metagrad_s"] > 0


def test_with_rows_reads_like_the_runs_matrices():
    base = {"a": np.zeros((2, 3)), "b": np.ones((2, 3))}
    extra = np.full((2, 3), np.nan)
    m = WithRows(base, "metagrad", extra)
    assert list(m) == ["a", "b", "metagrad"] and len(m) == 3 and "metagrad" in m and "c" not in m
    assert m["metagrad"] is extra and m["b"] is base["b"] and dict(m.items()).keys() == {"a", "b", "metagrad"}
    with pytest.raises(KeyError):
        m["c"]
