"""The retraining tables from synthetic measurements, against explicit loops: noise floor and the marks inside it,
Spearman per group kind (never pooled), LDS rows, counterfactual rows."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from engine.analysis.retrain import Group
from engine.analysis.retrain_tables import noise_floor, result_tables

N_TRAIN, N_TEST = 12, 4


def measurement(loss, kl=0.01, behaviour=None, delta=(0.1, 0.2)):
    modules = [{"module": f"m{i}", "delta_norm": d, "ba_norm": 2 * d, "merged_norm": 4 * d} for i, d in enumerate(delta)]
    return {"loss": list(loss), "kl": [kl] * len(loss), "behaviour": behaviour, "answer": behaviour,
            "modules": modules, "identical": False, "cached": False, "train_s": 1.0}


@pytest.fixture(scope="module")
def synthetic():
    rng = np.random.default_rng(0)
    S = rng.normal(size=(N_TEST, N_TRAIN))
    orig = np.full(N_TEST, 2.0)
    groups, results = [], {}

    def add(g, loss, **kw):
        groups.append(g)
        results[g.group_id] = measurement(loss, **kw)

    add(Group("noise-1", "noise", "", (), 1), orig + [0.01, -0.02, 0.005, 0.0], behaviour=[True] * 4)
    add(Group("noise-2", "noise", "", (), 2), orig + [-0.015, 0.01, 0.0, 0.02], behaviour=[True, True, False, True])
    add(Group("single-3", "single", "", (3,), 0), orig + [0.001, 0.0, -0.001, 0.002], behaviour=[True] * 4)
    add(Group("label-a", "label", "", (0, 1, 2, 3), 0), orig + [0.5, 0.4, -0.004, 0.0], behaviour=[False] * 4)
    for s in range(3):
        removed = tuple(sorted(rng.choice(N_TRAIN, 2, replace=False).tolist()))
        add(Group(f"random-{s}", "random", "", removed, 0), orig + rng.normal(0, 0.02, N_TEST), behaviour=[True] * 4)
    add(Group("topk-m-t1", "topk", "", (4, 5), 0, "m", 1), orig + [0.0, 0.3, 0.0, 0.0])
    add(Group("topk-m-t2", "topk", "", (6, 7), 0, "m", 2), orig + [0.0, 0.0, 0.001, 0.0])
    for s in range(5):
        removed = tuple(sorted(rng.choice(N_TRAIN, 6, replace=False).tolist()))
        # the actual loss goes up with the removed samples' score sum, plus noise: an imperfect predictor
        add(Group(f"lds-{s}", "lds", "", removed, 0), orig + S[:, list(removed)].sum(1) * 0.1 + rng.normal(0, 0.05, N_TEST))
    tables = result_tables(groups, results, {"m": S}, orig, 0.75, k=2, alpha=0.5, n_boot=200)
    return groups, results, S, orig, tables


def test_noise_floor_and_marks(synthetic):
    groups, results, S, orig, t = synthetic
    rows = {r["group_id"]: r for r in t["groups"]}
    floor = max(np.mean(np.abs(np.array(results[g]["loss"]) - orig)) for g in ("noise-1", "noise-2"))
    assert noise_floor(t["groups"], "mean_abs_dloss") == pytest.approx(floor)
    assert rows["single-3"]["within_noise"] is True and rows["label-a"]["within_noise"] is False
    assert rows["noise-1"]["within_noise"] is None
    assert noise_floor(t["groups"], "abs_behaviour_change") == pytest.approx(0.25)  # rates 1.0 and 0.75 vs 0.75
    tests = [r for r in t["tests"] if r["group_id"] == "label-a"]
    per_test = np.max([np.abs(np.array(results[g]["loss"]) - orig) for g in ("noise-1", "noise-2")], axis=0)
    assert [r["noise_floor"] for r in tests] == pytest.approx(per_test.tolist())
    assert [r["within_noise"] for r in tests] == [False, False, True, True]
    assert rows["label-a"]["ba_norm_mean"] == pytest.approx(0.3) and rows["label-a"]["merged_norm_mean"] == pytest.approx(0.6)
    assert rows["label-a"]["param_change"] == pytest.approx(np.sqrt(0.1 ** 2 + 0.2 ** 2))
    assert rows["topk-m-t1"]["behaviour_rate"] is None and rows["label-a"]["behaviour_change"] == pytest.approx(-0.75)


def test_spearman_is_reported_per_group_kind(synthetic):
    groups, results, S, orig, t = synthetic
    got = {r["kind"]: r for r in t["methods"]}
    assert set(got) == {"single", "label", "random", "topk", "lds"}  # noise has no prediction
    for kind in got:
        pred, actual = [], []
        for g in groups:
            if g.kind == kind:
                for j in range(N_TEST):
                    pred.append(sum(S[j, i] for i in g.removed))
                    actual.append(results[g.group_id]["loss"][j] - orig[j])
        assert got[kind]["n_pairs"] == len(pred)
        assert got[kind]["spearman"] == pytest.approx(spearmanr(pred, actual).statistic)


def test_lds_row_against_a_loop(synthetic):
    groups, results, S, orig, t = synthetic
    (row,) = t["lds"]
    rhos = []
    subsets = [g for g in groups if g.kind == "lds"]
    for j in range(N_TEST):
        kept = [sum(S[j, i] for i in range(N_TRAIN) if i not in g.removed) for g in subsets]
        loss = [results[g.group_id]["loss"][j] for g in subsets]
        rhos.append(spearmanr(kept, [-x for x in loss]).statistic)
    assert row["lds"] == pytest.approx(np.mean(rhos))
    assert row["n_subsets"] == 5 and row["alpha"] == 0.5 and row["lds_lo"] <= row["lds"] <= row["lds_hi"]


def test_counterfactual_rows(synthetic):
    groups, results, S, orig, t = synthetic
    rows = {(r["method"], r["test_id"]): r for r in t["counterfactual"]}
    assert set(rows) == {("m", 1), ("m", 2)}
    r = rows[("m", 1)]
    rnd = [results[f"random-{s}"]["loss"][1] - orig[1] for s in range(3)]
    assert r["dloss"] == pytest.approx(0.3) and r["random_max"] == pytest.approx(max(rnd))
    assert r["random_mean"] == pytest.approx(np.mean(rnd)) and r["n_random"] == 3 and r["k"] == 2
    assert r["beats_random"] is True and r["within_noise"] is False
    assert rows[("m", 2)]["within_noise"] is True  # 0.001 is inside that prompt's reshuffle noise


def test_predictions_cover_every_group_but_noise(synthetic):
    groups, results, S, orig, t = synthetic
    assert len(t["predictions"]) == (len(groups) - 2) * N_TEST
    p = next(r for r in t["predictions"] if r["group_id"] == "label-a" and r["test_id"] == 2)
    assert p["predicted"] == pytest.approx(S[2, :4].sum())
