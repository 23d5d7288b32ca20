"""Retraining with samples removed: the plan of retrainings, parameter change against explicit products, a task
built so that removing a label must hurt that label, the retrain bank's reuse across runs, forked workers."""

import dataclasses
import json
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from engine.analysis.retrain import (
    CF_RANDOM_DRAWS,
    cf_prompts,
    lora_modules,
    noise_groups,
    parameter_change,
    plan,
    removal_groups,
    removal_k,
    unique_retrainings,
)
from engine.evaluation.metrics import ranking
from engine.pipeline.run import run_pipeline
from engine.spec.load import spec_from_dict
from engine.spec.run_spec import AnalysisSpec

LABELS = ("red", "green", "blue")
ANSWERS = {"red": "apple pie", "green": "grass field", "blue": "ocean wave"}
WORDS = "the a cat dog sat on mat ran far near old new big small house tree road".split()


def test_removal_groups():
    labels = ["a"] * 6 + ["b"] * 4 + ["c"] * 10
    groups = removal_groups(labels, n_single=3, n_labels=2, fraction=0.25, n_random=4, seed=7)
    kinds = [g.kind for g in groups]
    assert kinds == ["single"] * 3 + ["label"] * 2 + ["random"] * 4
    assert all(len(g.removed) == 1 for g in groups[:3]) and all(g.seed == 7 for g in groups)
    assert groups[3].removed == tuple(range(6)) and groups[4].removed == tuple(range(6, 10))
    randoms = [g.removed for g in groups[5:]]
    assert all(len(r) == 5 and len(set(r)) == 5 for r in randoms)
    assert len(set(randoms)) == 4  # different draws, different subsets
    assert len({g.group_id for g in groups}) == len(groups)
    assert removal_groups(labels, n_single=3, n_labels=2, fraction=0.25, n_random=4, seed=7) == groups
    assert len(removal_groups(labels, n_single=0, n_labels=0, fraction=0.1, n_random=0, seed=0)) == 3  # all labels


def test_noise_groups_retrain_the_full_set_with_other_seeds():
    groups = noise_groups(3, seed=5)
    assert [g.seed for g in groups] == [6, 7, 8] and all(g.removed == () and g.kind == "noise" for g in groups)


def test_cf_prompts_spread_over_labels():
    labels = ["x"] * 5 + ["y"] * 2 + ["z"] * 1
    got = cf_prompts(labels, 5, seed=0)
    assert len(got) == len(set(got)) == 5
    assert [labels[j] for j in got[:3]] == ["x", "y", "z"]  # one of each label first
    assert cf_prompts(labels, 20, seed=0) and sorted(cf_prompts(labels, 20, seed=0)) == list(range(8))
    assert cf_prompts(labels, 5, seed=0) == got


def test_plan_holds_every_kind_and_the_methods_top_k():
    rng = np.random.default_rng(0)
    train_labels = [f"c{i % 4}" for i in range(40)]
    test_labels = [f"c{j % 4}" for j in range(8)]
    matrices = {"m1": rng.normal(size=(8, 40)), "m2": rng.normal(size=(8, 40))}
    a = AnalysisSpec(retrain_single=2, retrain_labels=1, retrain_fraction=0.1, retrain_seeds=3, noise_seeds=2,
                     lds_subsets=5, lds_fraction=0.5, cf_prompts=3, cf_methods=("m2", "not-scored"))
    groups, prompts, k = plan(train_labels, test_labels, matrices, a, seed=0)
    assert k == removal_k(40, 0.1) == 4 and len(prompts) == 3
    count = {kind: sum(g.kind == kind for g in groups) for kind in ("noise", "single", "label", "random", "topk", "lds")}
    # the counterfactual's baseline: the 3 random k-sets topped up to 19 draws, the extra ones without generations
    assert count == {"noise": 2, "single": 2, "label": 1, "random": CF_RANDOM_DRAWS, "topk": 3, "lds": 5}
    randoms = [g for g in groups if g.kind == "random"]
    assert [g.generate for g in randoms] == [True] * 3 + [False] * (CF_RANDOM_DRAWS - 3)
    assert len({g.removed for g in randoms}) == CF_RANDOM_DRAWS and all(len(g.removed) == 4 for g in randoms)
    assert randoms[:3] == removal_groups(train_labels, n_single=2, n_labels=1, fraction=0.1, n_random=3, seed=0)[-3:]
    for g in (g for g in groups if g.kind == "topk"):
        assert g.method == "m2"  # only the scored methods named in cf_methods
        want = sorted(ranking(matrices["m2"])[g.prompt, :4].tolist())
        assert list(g.removed) == want
        assert np.all(matrices["m2"][g.prompt, list(g.removed)] >= np.sort(matrices["m2"][g.prompt])[-4])
    for g in (g for g in groups if g.kind == "lds"):
        assert len(g.removed) == 20  # keeps alpha * n = 20 of 40
    # two groups that remove the same set (and seed) share one retraining
    jobs = unique_retrainings(groups + [groups[2]])
    assert len(jobs) == len({g.retraining for g in groups})
    full = {(r, s): f for r, s, f in jobs}
    assert all(full[g.retraining] == g.generate for g in groups if g.kind in ("noise", "single", "label", "random"))
    no_cf = plan(train_labels, test_labels, matrices, dataclasses.replace(a, cf_prompts=0), seed=0)[0]
    assert sum(g.kind == "random" for g in no_cf) == 3  # no counterfactual check, no extra draws


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
        # the authors' delta.py: ||B A||_F of the adapter, WITHOUT alpha/r; the merged update has it
        ba = np.sqrt(sum((b_new[i] @ a_new[:, j]) ** 2 for i in range(16) for j in range(16)))
        assert r["ba_norm"] == pytest.approx(ba, rel=1e-10)
        assert r["merged_norm"] == pytest.approx(2 * ba, rel=1e-10)
    assert all(r["delta_norm"] == 0 for r in parameter_change(new, new, 2.0))


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


def colour_spec(path, workers=1, stages=("retrain",), name=None):
    return spec_from_dict({
        "name": name or f"colours-w{workers}", "task": {"name": "file", "path": str(path)}, "model": {"name": "tiny"},
        "lora": {"r": 4, "alpha": 16, "dropout": 0.1},
        "train": {"epochs": 3, "batch_size": 4, "lr": 0.01, "max_length": 32, "loss_on": "response"},
        "scoring": {"methods": ["gradsim", "datainf"], "checkpoints": "all", "shard_size": 16},
        "analysis": {"stages": list(stages), "retrain_single": 1, "retrain_labels": 0, "retrain_seeds": 2,
                     "retrain_fraction": 0.2, "noise_seeds": 1, "lds_subsets": 3, "cf_prompts": 1,
                     "retrain_workers": workers, "generate_tokens": 6},
    })


def read(folder, name):
    return pq.read_table(folder / f"{name}.parquet").to_pandas()


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("colours")
    spec = colour_spec(write_colour_task(tmp / "colours.jsonl"), stages=("retrain", "convergence"))
    return run_pipeline(spec, tmp / "runs", progress=False)


def test_groups_table_holds_the_noise_floor_and_marks_changes_inside_it(colour_run):
    groups = read(colour_run, "retrain_groups").set_index("group_id")
    noise = groups[groups.kind == "noise"]
    assert len(noise) == 1 and not noise.identical.iloc[0] and noise.param_change.iloc[0] > 0
    assert noise.within_noise.isna().all()
    rest = groups[~groups.kind.isin(["noise", "identity", "repeat"])]
    floor = noise.mean_abs_dloss.max()
    assert (rest.within_noise == (rest.mean_abs_dloss <= floor)).all()
    assert (rest.param_change > 0).all()
    assert set(groups.kind) == {"identity", "noise", "single", "label", "random", "topk", "lds", "repeat"}
    # the standing check: nothing removed at the train seed is the original, bit for bit (dropout 0.1 is on)
    identity = groups.loc["identity"]
    assert identity.identical and identity.param_change == 0 and identity.mean_abs_dloss == 0
    assert groups.drop("identity").identical.sum() == 0
    assert groups[groups.kind.isin(["identity", "repeat"])].within_noise.isna().all()
    # generations only where they are read (the removal groups and the noise floor)
    assert rest[rest.kind.isin(["topk", "lds"])].behaviour_rate.isna().all()
    assert groups[groups.kind.isin(["noise", "label"])].behaviour_rate.notna().all()
    tests = read(colour_run, "retrain_tests")
    nf = tests[tests.group_id == noise.index[0]].set_index("test_id").dloss.abs()
    some = tests[tests.group_id == "label-red"].set_index("test_id")
    np.testing.assert_allclose(some.noise_floor, nf.loc[some.index])
    assert (some.within_noise == (some.dloss.abs() <= some.noise_floor)).all()


def test_every_retraining_takes_the_original_number_of_steps(colour_run):
    """Removal = weight 0 inside the original batches: every retraining (removals, LDS subsets, top k, reshuffles)
    takes exactly as many optimizer steps as the original fine-tune."""
    groups = read(colour_run, "retrain_groups")
    original_steps = len(read(colour_run, "train_loss"))
    assert original_steps == 3 * -(-24 // 4)  # 3 epochs of 24 samples in batches of 4
    assert (groups.steps == original_steps).all(), groups[["group_id", "steps"]]


def test_removals_are_repeated_at_a_second_seed_against_that_seeds_full_model(colour_run):
    groups = read(colour_run, "retrain_groups").set_index("group_id")
    tests = read(colour_run, "retrain_tests")
    repeats = groups[groups.kind == "repeat"]
    originals = groups[groups.kind.isin(["single", "label", "random"]) & groups.behaviour_rate.notna()]
    assert sorted(repeats.index) == sorted(f"{g}@seed1" for g in originals.index) and (repeats.seed == 1).all()
    dloss = tests.pivot(index="test_id", columns="group_id", values="dloss")  # against the original (seed 0)
    for g in originals.index:
        e0 = dloss[g].to_numpy()
        e1 = (dloss[f"{g}@seed1"] - dloss["noise-1"]).to_numpy()  # L(removed, 1) - L(full, 1)
        row = groups.loc[g]
        assert row.seed_abs_dloss == pytest.approx(np.abs(e1).mean(), rel=1e-6, abs=1e-12)
        assert row.seed_spread == pytest.approx(np.abs(e0 - e1).mean(), rel=1e-6, abs=1e-12)
    assert groups[~groups.index.isin(originals.index)].seed_spread.isna().all()


def test_removing_a_label_hurts_that_label_most(colour_run):
    tests = read(colour_run, "retrain_tests")
    samples = read(colour_run, "samples")
    test_label = samples[samples.split == "test"].set_index("sample_id")["label"]
    tests["label"] = tests.test_id.map(test_label)
    for lab in LABELS:
        t = tests[tests.group_id == f"label-{lab}"]
        own, others = t[t.label == lab].dloss.mean(), t[t.label != lab].dloss.mean()
        assert own > 0 and own > 3 * abs(others), (lab, own, others)
        assert t[t.label == lab].within_noise.sum() == 0  # far outside the reshuffle noise


def test_prediction_method_lds_and_counterfactual_tables(colour_run):
    preds = read(colour_run, "retrain_predictions")
    groups = read(colour_run, "retrain_groups")
    assert set(preds.method) == {"gradsim", "datainf"}
    assert len(preds) == 2 * (~groups.kind.isin(["noise", "identity", "repeat"])).sum() * 9
    methods = read(colour_run, "retrain_methods")
    assert set(methods.kind) == {"single", "label", "random", "topk", "lds"}  # kinds apart, no pooled value
    assert (methods[methods.kind == "label"].n_pairs == 27).all()
    lds = read(colour_run, "retrain_lds").set_index("method")
    assert (lds.n_subsets == 3).all() and (lds.alpha == 0.5).all()
    assert ((lds.lds_lo <= lds.lds) & (lds.lds <= lds.lds_hi)).all()
    cf = read(colour_run, "retrain_counterfactual")
    assert set(cf.method) == {"gradsim", "datainf"} and (cf.n_random == CF_RANDOM_DRAWS).all() and (cf.k == 5).all()
    tests = read(colour_run, "retrain_tests")
    for r in cf.itertuples():
        d = tests[(tests.group_id == r.group_id) & (tests.test_id == r.test_id)].dloss.iloc[0]
        rnd = [tests[(tests.group_id == f"random-{s}") & (tests.test_id == r.test_id)].dloss.iloc[0]
               for s in range(CF_RANDOM_DRAWS)]
        assert r.dloss == pytest.approx(d) and r.random_max == pytest.approx(max(rnd))
        assert r.rank == 1 + sum(x >= d for x in rnd) and r.beats_random == (r.rank == 1)
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


def test_a_second_run_reuses_every_retraining_from_the_bank(colour_run, tmp_path):
    bank = colour_run.parent.parent / "retrain-bank"  # the default: next to the runs folder
    entries = [p for p in bank.glob("*/*") if (p / "meta.json").is_file()]
    groups = read(colour_run, "retrain_groups")
    assert len(entries) == len(set(zip(groups.removed, groups.seed)))
    assert not groups.cached.any()
    spec = colour_spec(write_colour_task(tmp_path / "colours.jsonl"), stages=("retrain",), name="colours-again")
    spec = spec_from_dict({**spec.to_dict(), "analysis": {**spec.to_dict()["analysis"], "retrain_bank": str(bank)}})
    again = run_pipeline(spec, tmp_path / "runs", progress=False)
    timings = json.loads((again / "manifest.json").read_text())["timings"]
    assert timings["retrain_new"] == 0 and timings["retrain_reused"] == len(entries)
    b = read(again, "retrain_groups")
    assert b.cached.all()
    for col in ("param_change", "mean_dloss", "kl_mean", "behaviour_rate"):
        np.testing.assert_array_equal(b[col].to_numpy(), groups[col].to_numpy(), err_msg=col)


@pytest.mark.slow
def test_forked_workers_give_the_same_measurements(colour_run, tmp_path):
    spec = colour_spec(write_colour_task(tmp_path / "colours.jsonl"), workers=2)
    spec = spec_from_dict({**spec.to_dict(), "analysis": {**spec.to_dict()["analysis"], "retrain_bank": "off"}})
    forked = run_pipeline(spec, tmp_path / "runs", progress=False)
    assert not (tmp_path / "retrain-bank").exists()
    a = read(colour_run, "retrain_groups").set_index("group_id").sort_index()
    b = read(forked, "retrain_groups").set_index("group_id").sort_index()
    assert list(a.index) == list(b.index)
    for col in ("param_change", "mean_dloss", "kl_mean"):
        np.testing.assert_allclose(b[col], a[col], rtol=1e-3, atol=1e-6, err_msg=col)
