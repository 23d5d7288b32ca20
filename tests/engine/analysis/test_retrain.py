"""Retraining with groups removed: groups, parameter change against explicit products, exact reproduction of
the original adapter with nothing removed, and a task built so that removing a label must hurt that label."""

import json
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from engine.analysis.retrain import lora_modules, method_agreement, parameter_change, removal_groups
from engine.pipeline import run_pipeline
from engine.spec import spec_from_dict

LABELS = ("red", "green", "blue")
ANSWERS = {"red": "apple pie", "green": "grass field", "blue": "ocean wave"}
WORDS = "the a cat dog sat on mat ran far near old new big small house tree road".split()


def test_groups():
    labels = ["a"] * 6 + ["b"] * 4 + ["c"] * 10
    groups = removal_groups(labels, n_single=3, n_labels=2, fraction=0.25, n_random=4, seed=7)
    kinds = [g.kind for g in groups]
    assert kinds == ["none"] + ["single"] * 3 + ["label"] * 2 + ["random"] * 4
    assert groups[0].removed == ()
    assert all(len(g.removed) == 1 for g in groups[1:4])
    assert groups[4].removed == tuple(range(6)) and groups[5].removed == tuple(range(6, 10))
    randoms = [g.removed for g in groups[6:]]
    assert all(len(r) == 5 and len(set(r)) == 5 for r in randoms)
    assert len(set(randoms)) == 4  # different seeds, different subsets
    assert len({g.group_id for g in groups}) == len(groups)
    assert removal_groups(labels, n_single=3, n_labels=2, fraction=0.25, n_random=4, seed=7) == groups
    assert len(removal_groups(labels, n_single=0, n_labels=0, fraction=0.1, n_random=0, seed=0)) == 4  # all labels


def test_parameter_change_against_explicit_products():
    gen = torch.Generator().manual_seed(0)
    prefix = "base_model.model.model.layers.{}.self_attn.{}.lora_{}.weight"
    shapes = {"A": (4, 16), "B": (16, 4)}

    def state():
        return {prefix.format(l, m, p): torch.randn(*shapes[p], generator=gen)
                for l in range(2) for m in ("q_proj", "v_proj") for p in "AB"}

    old, new = state(), state()
    assert sorted(lora_modules(new)) == [f"model.layers.{l}.self_attn.{m}" for l in range(2) for m in ("q_proj", "v_proj")]
    rows = parameter_change(old, new, scaling=2.0)
    for r in rows:
        l, m = r["module"].split(".")[2], r["module"].split(".")[-1]
        a_new, b_new = (new[prefix.format(l, m, p)].numpy().astype(np.float64) for p in "AB")
        a_old, b_old = (old[prefix.format(l, m, p)].numpy().astype(np.float64) for p in "AB")
        want = np.sqrt(sum((2 * (b_new[i] @ a_new[:, j] - b_old[i] @ a_old[:, j])) ** 2
                           for i in range(16) for j in range(16)))
        assert r["delta_norm"] == pytest.approx(want, rel=1e-10)
        assert r["ba_norm"] == pytest.approx(np.linalg.norm(2 * b_new @ a_new), rel=1e-10)
    assert all(r["delta_norm"] == 0 for r in parameter_change(new, new, 2.0))


def test_method_agreement_pooled_and_lds():
    from engine.analysis.retrain import Group

    rng = np.random.default_rng(0)
    S = rng.normal(size=(4, 10))
    groups = [Group("none", "none", "", ())] + [Group(f"random-{s}", "random", "", tuple(rng.choice(10, 3, replace=False)))
                                                for s in range(5)]
    # the actual change is exactly the prediction: perfect agreement
    results = [{"dloss": S[:, list(g.removed)].sum(1).tolist() if g.removed else [0.0] * 4} for g in groups]
    row = method_agreement(groups, results, {"m": S})[0]
    assert row["spearman_pooled"] == pytest.approx(1.0) and row["lds"] == pytest.approx(1.0)
    assert row["n_pairs"] == 20 and row["n_random"] == 5
    flipped = method_agreement(groups, results, {"m": -S})[0]
    assert flipped["spearman_pooled"] == pytest.approx(-1.0) and flipped["lds"] == pytest.approx(-1.0)


def write_colour_task(path, n_train=8, n_test=3):
    """Each label's prompts carry its colour word and its answer is a fixed phrase: a model can only produce
    that phrase from that label's training samples."""
    rng = random.Random(0)
    rows = []
    for split, n in (("train", n_train), ("test", n_test)):
        for lab in LABELS:
            for _ in range(n):
                prompt = f"{lab} " + " ".join(rng.choice(WORDS) for _ in range(4))
                rows.append({"split": split, "prompt": prompt, "response": ANSWERS[lab], "label": lab})
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


def colour_spec(path, workers=1, stages=("retrain",)):
    return spec_from_dict({
        "name": f"colours-w{workers}", "task": {"name": "file", "path": str(path)}, "model": {"name": "tiny"},
        "lora": {"r": 4, "alpha": 16, "dropout": 0.0},
        "train": {"epochs": 3, "batch_size": 4, "lr": 0.01, "max_length": 32, "loss_on": "response"},
        "scoring": {"methods": ["gradsim", "datainf"], "checkpoints": "all", "shard_size": 16},
        "analysis": {"stages": list(stages), "retrain_single": 1, "retrain_labels": 0, "retrain_seeds": 3,
                     "retrain_fraction": 0.2, "retrain_workers": workers, "generate_tokens": 6},
    })


def read(folder, name):
    return pq.read_table(folder / f"{name}.parquet").to_pandas()


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("colours")
    spec = colour_spec(write_colour_task(tmp / "colours.jsonl"), stages=("retrain", "convergence"))
    return run_pipeline(spec, tmp / "runs", progress=False)


def test_nothing_removed_reproduces_the_original_adapter_exactly(colour_run):
    groups = read(colour_run, "retrain_groups").set_index("group_id")
    control = groups.loc["none"]
    assert bool(control["identical"])
    assert control["param_change"] == 0 and control["kl_mean"] == 0 and control["mean_abs_dloss"] == 0
    assert (groups.drop("none")["param_change"] > 0).all()


def test_removing_a_label_hurts_that_label_most(colour_run):
    tests = read(colour_run, "retrain_tests")
    samples = read(colour_run, "samples")
    test_label = samples[samples.split == "test"].set_index("sample_id")["label"]
    tests["label"] = tests.test_id.map(test_label)
    for lab in LABELS:
        t = tests[tests.group_id == f"label-{lab}"]
        own, others = t[t.label == lab].dloss.mean(), t[t.label != lab].dloss.mean()
        assert own > 0 and own > 3 * abs(others), (lab, own, others)


def test_prediction_tables(colour_run):
    preds = read(colour_run, "retrain_predictions")
    groups = read(colour_run, "retrain_groups")
    assert set(preds.method) == {"gradsim", "datainf"}
    assert len(preds) == 2 * len(groups) * 9
    methods = read(colour_run, "retrain_methods")
    assert set(methods.method) == {"gradsim", "datainf"} and (methods.n_random == 3).all()
    # removing a whole label: GradSim's predicted loss increase is largest on that label's test samples
    S_pred = preds[(preds.method == "gradsim") & (preds.group_id == "label-red")].set_index("test_id").predicted
    samples = read(colour_run, "samples")
    red = samples[(samples.split == "test") & (samples.label == "red")].sample_id
    assert S_pred.loc[red].mean() > S_pred.drop(red).mean()


def test_convergence_tables(colour_run):
    ev = read(colour_run, "checkpoint_eval")
    assert list(ev.checkpoint) == [0, 1, 2, 3]
    assert ev.train_loss.iloc[-1] < ev.train_loss.iloc[0]
    assert ev.gen_acc.between(0, 1).all()
    drift = read(colour_run, "score_drift")
    assert sorted(set(drift.checkpoint)) == [2, 3] and set(drift.method) == {"gradsim", "datainf"}
    assert drift.spearman_prev.between(-1, 1).all()


@pytest.mark.slow
def test_forked_workers_give_the_same_measurements(colour_run, tmp_path):
    spec = colour_spec(write_colour_task(tmp_path / "colours.jsonl"), workers=2)
    forked = run_pipeline(spec, tmp_path / "runs", progress=False)
    a = read(colour_run, "retrain_groups").set_index("group_id").sort_index()
    b = read(forked, "retrain_groups").set_index("group_id").sort_index()
    assert list(a.index) == list(b.index)
    for col in ("param_change", "mean_dloss", "kl_mean", "behaviour_rate"):
        np.testing.assert_allclose(b[col], a[col], rtol=1e-3, atol=1e-6, err_msg=col)
