"""The retraining tables from synthetic measurements, against explicit loops: noise floor and the marks inside it,
Spearman per group kind (never pooled), LDS rows, counterfactual rows."""

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from engine.analysis.retrain import Group
from engine.analysis.retrain_tables import noise_floor, result_tables

N_TRAIN, N_TEST = 12, 4
pytestmark = pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")  # the references


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


def _pairs(groups, results, orig, S, kind, control=False):
    """P, D [test][group] of one kind by loops; the control predicts |removed| * the prompt's mean score."""
    gs = [g for g in groups if g.kind == kind]
    P = [[len(g.removed) * float(np.mean(S[j])) if control else sum(S[j, i] for i in g.removed) for g in gs]
         for j in range(N_TEST)]
    D = [[results[g.group_id]["loss"][j] - orig[j] for g in gs] for j in range(N_TEST)]
    return P, D


def _reference(P, D):
    pooled = spearmanr([x for r in P for x in r], [x for r in D for x in r]).statistic
    G = len(P[0])
    centred = np.nan
    if G >= 2:
        pc = [x - np.mean(r) for r in P for x in r]
        dc = [x - np.mean(r) for r in D for x in r]
        centred = spearmanr(pc, dc).statistic
    per = [spearmanr(p, d).statistic for p, d in zip(P, D)] if G >= 3 else []
    per = [x for x in per if np.isfinite(x)]
    return pooled, centred, (np.mean(per) if per else np.nan), len(per)


def test_spearman_is_reported_per_group_kind_per_test_and_beside_the_control(synthetic):
    groups, results, S, orig, t = synthetic
    got = {r["kind"]: r for r in t["methods"]}
    assert set(got) == {"single", "label", "random", "topk", "lds"}  # noise has no prediction
    for kind, row in got.items():
        P, D = _pairs(groups, results, orig, S, kind)
        pooled, centred, per, n = _reference(P, D)
        assert row["n_pairs"] == N_TEST * len(P[0]) and row["n_groups"] == len(P[0]) and row["n_tests"] == n
        assert row["spearman"] == pytest.approx(pooled)
        for col, want in (("centred", centred), ("per_test", per)):
            assert (row[col] is None) if np.isnan(want) else row[col] == pytest.approx(want), (kind, col)
        C, _ = _pairs(groups, results, orig, S, kind, control=True)
        c_pooled, c_centred, c_per, _ = _reference(C, D) if len(P[0]) * N_TEST >= 3 else (np.nan,) * 4
        assert (row["control"] is None) if np.isnan(c_pooled) else row["control"] == pytest.approx(c_pooled)
        # equal-size removals: the control predicts the same for every group of a prompt, so it has no
        # per-prompt correlation at all
        if kind in ("random", "lds"):
            assert row["control_per_test"] is None and row["control_centred"] is None
    assert got["lds"]["per_test"] > 0.3  # the lds losses were built to follow the scores


def test_a_prediction_that_only_knows_the_prompts_scale_scores_nothing_per_test():
    """Hand-built confound: the actual change is a per-prompt scale times noise that no score knows, and the
    method's prediction is that scale alone. Pooled, it looks excellent (and so does the control); per prompt it
    has no correlation to offer."""
    from engine.analysis.retrain_tables import kind_figures

    rng = np.random.default_rng(1)
    scale = np.array([0.1, 1.0, 10.0, 100.0])[:, None]
    D = scale * rng.uniform(0.5, 1.5, size=(4, 20))
    P = np.repeat(scale, 20, axis=1) + rng.normal(0, 1e-9, (4, 20))  # ties broken by noise
    f = kind_figures(P, D)
    assert f["spearman"] > 0.9 and abs(f["per_test"]) < 0.3 and abs(f["centred"]) < 0.3 and f["n_tests"] == 4


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
    assert r["beats_random"] is True and r["rank"] == 1 and r["within_noise"] is False
    assert rows[("m", 2)]["within_noise"] is True  # 0.001 is inside that prompt's reshuffle noise
    d2 = results["topk-m-t2"]["loss"][2] - orig[2]
    rank2 = 1 + sum(results[f"random-{s}"]["loss"][2] - orig[2] >= d2 for s in range(3))
    assert rows[("m", 2)]["rank"] == rank2
    # binomial p from its definition: P(X >= hits), X ~ Binomial(prompts, 1 / (R + 1))
    hits = sum(x["rank"] == 1 for x in rows.values())
    want = sum(math.comb(2, x) * 0.25 ** x * 0.75 ** (2 - x) for x in range(hits, 3))
    assert r["binom_p"] == pytest.approx(want) and rows[("m", 2)]["binom_p"] == pytest.approx(want)


def test_binomial_p_against_the_sum():
    from engine.analysis.retrain_tables import binomial_p

    for hits, n in ((0, 5), (1, 5), (3, 5), (5, 5), (2, 20)):
        want = sum(math.comb(n, x) * 0.05 ** x * 0.95 ** (n - x) for x in range(hits, n + 1))
        assert binomial_p(hits, n, 0.05) == pytest.approx(want, rel=1e-9)
    assert math.isnan(binomial_p(0, 0, 0.05))


def test_seed_effects_against_a_loop():
    """A removal repeated at seed 1: its effect there is taken against the full set at seed 1 (the noise group of
    that seed), not against the original; identity and repeat rows carry no noise mark and no prediction."""
    orig = np.array([2.0, 1.0, 3.0, 0.5])
    loss = {"noise-1": orig + [0.1, -0.1, 0.0, 0.2], "identity": orig, "single-3": orig + [0.3, 0.0, -0.1, 0.05],
            "single-3@seed1": orig + [0.1, -0.1, 0.0, 0.2] + [0.2, 0.05, -0.2, 0.0]}
    groups = [Group("noise-1", "noise", "", (), 1), Group("identity", "identity", "", (), 0),
              Group("single-3", "single", "", (3,), 0), Group("single-3@seed1", "repeat", "", (3,), 1, paired="single-3")]
    results = {g: measurement(v) for g, v in loss.items()}
    t = result_tables(groups, results, {"m": np.ones((4, N_TRAIN))}, orig, 0.5, k=1, alpha=0.5, n_boot=10)
    rows = {r["group_id"]: r for r in t["groups"]}
    e0 = [0.3, 0.0, -0.1, 0.05]
    e1 = [0.2, 0.05, -0.2, 0.0]
    assert rows["single-3"]["seed_abs_dloss"] == pytest.approx(np.mean(np.abs(e1)))
    assert rows["single-3"]["seed_spread"] == pytest.approx(np.mean([abs(a - b) for a, b in zip(e0, e1)]))
    assert rows["single-3"]["seed_rho"] == pytest.approx(spearmanr(e0, e1).statistic)
    for g in ("identity", "single-3@seed1", "noise-1"):
        assert rows[g]["seed_spread"] is None and rows[g]["within_noise"] is None
    assert {p["group_id"] for p in t["predictions"]} == {"single-3"}
    assert {m["kind"] for m in t["methods"]} == {"single"}


def test_predictions_cover_every_group_but_noise(synthetic):
    groups, results, S, orig, t = synthetic
    assert len(t["predictions"]) == (len(groups) - 2) * N_TEST
    p = next(r for r in t["predictions"] if r["group_id"] == "label-a" and r["test_id"] == 2)
    assert p["predicted"] == pytest.approx(S[2, :4].sum())


def _lds_loop(S, groups, results, prompts):
    """Mean over ``prompts`` of the Spearman across the LDS subsets of the kept samples' score sum and -loss."""
    subsets = [g for g in groups if g.kind == "lds"]
    rhos = []
    for j in prompts:
        kept = [sum(S[j, i] for i in range(N_TRAIN) if i not in g.removed) for g in subsets]
        rhos.append(spearmanr(kept, [-results[g.group_id]["loss"][j] for g in subsets]).statistic)
    return float(np.mean(rhos))


def test_metagrad_rows_cover_its_prompts_only_and_the_decomposition_sets_every_method_beside_it(synthetic):
    """metagrad's matrix has rows for two prompts (NaN elsewhere): its LDS, kind figures and predictions use those
    prompts only; the decomposition gives every method's LDS on exactly those prompts (a loop here), labelled, and
    the subsets' mean |dloss| on them beside their mean noise floor."""
    groups, results, S, orig, _ = synthetic
    rng = np.random.default_rng(5)
    exact = np.full_like(S, np.nan)
    on = [1, 3]
    exact[on] = S[on] + rng.normal(0, 0.3, (2, N_TRAIN))
    t = result_tables(groups, results, {"datainf": S, "metagrad": exact}, orig, 0.75, k=2, alpha=0.5, n_boot=200)
    lds = {r["method"]: r for r in t["lds"]}
    assert lds["metagrad"]["n_test"] == 2 and lds["datainf"]["n_test"] == N_TEST
    assert lds["metagrad"]["lds"] == pytest.approx(_lds_loop(exact, groups, results, on))
    assert {r["test_id"] for r in t["predictions"] if r["method"] == "metagrad"} == set(on)
    kinds = {(r["method"], r["kind"]): r for r in t["methods"]}
    assert kinds[("metagrad", "random")]["n_pairs"] == 2 * 3  # 2 prompts x 3 random groups
    dec = {r["method"]: r for r in t["decomposition"]}
    assert set(dec) == {"datainf", "metagrad"} and dec["datainf"]["part"].startswith("converged model + DataInf")
    assert dec["datainf"]["lds"] == pytest.approx(_lds_loop(S, groups, results, on))
    assert dec["metagrad"]["lds"] == pytest.approx(lds["metagrad"]["lds"]) and dec["datainf"]["n_prompts"] == 2
    subsets = [g for g in groups if g.kind == "lds"]
    signal = np.mean([abs(results[g.group_id]["loss"][j] - orig[j]) for g in subsets for j in on])
    floors = [max(abs(results[g]["loss"][j] - orig[j]) for g in ("noise-1", "noise-2")) for j in on]
    assert dec["datainf"]["signal"] == pytest.approx(signal) and dec["datainf"]["noise_floor"] == pytest.approx(
        np.mean(floors))
    assert result_tables(groups, results, {"datainf": S}, orig, 0.75, k=2, alpha=0.5, n_boot=50)["decomposition"] == []


def test_decomposition_reading_splits_the_gap_in_plain_words():
    from engine.catalog.analyses import decomposition_reading

    text = " ".join(decomposition_reading({"datainf": 0.2, "exact": 0.3, "metagrad": 0.9, "tracin": 0.5}, 0.02,
                                          0.01))
    assert "Of the gap between DataInf (LDS 0.20) and the best achievable here (metagrad, 0.90)" in text
    assert "0.10 (14%) comes from the curvature approximation" in text and "0.60 (86%) from assuming" in text
    assert "TracIn" in text and "leaves 0.10" in text and "above their noise floor" in text
    assert "no gap" in " ".join(decomposition_reading({"datainf": 0.9, "exact": 0.8, "metagrad": 0.7}))
    helps = " ".join(decomposition_reading({"datainf": 0.67, "exact": 0.57, "metagrad": 0.78}))
    assert "none comes from the curvature approximation" in helps and "helps here by 0.10" in helps
    assert "metagrad is 0.21 above the exact inverse" in helps and "%" not in helps
    above = " ".join(decomposition_reading({"datainf": 0.5, "exact": 0.8, "metagrad": 0.7}))
    assert "accounts for all of it and more" in above
    assert decomposition_reading({"datainf": 0.2}) == []
