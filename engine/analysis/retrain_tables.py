"""The retraining analysis' tables, from the groups (engine.analysis.retrain.plan) and the measurements of their
retrainings. Pure numpy: tested against explicit loops.

Noise floor. For a measure x of a retrained model (per test sample: |dloss_j|; per group: mean |dloss|, mean KL,
|Δ behaviour rate|, ‖ΔW‖), the noise floor is the largest value x takes over the ``noise`` retrainings (the full set
with other data-order seeds, against the original). A removal's change with |x| <= that floor is "inside the
noise": a reshuffle of the same data moves the model as much. Without noise retrainings it is undefined (NULL).

Tables (columns in engine.analysis.stages.TABLES):
- ``retrain_groups``: one row per group; ``within_noise`` judged on mean |dloss|; ``steps``: the optimizer steps
  it took (always the original's); ``identical``: the adapter equals the original bit for bit (must hold for the
  ``identity`` group); for a removal repeated at a second seed, its effect there (:func:`seed_effects`).
- ``retrain_modules``: per (group, LoRA module) the three norms of engine.analysis.retrain.parameter_change.
- ``retrain_tests``: per (group, test sample) dloss, KL, the test sample's noise floor and whether |dloss| is inside.
- ``retrain_predictions``: per (group except noise, method, test sample) the prediction sum_{i removed} S[j, i].
- ``retrain_methods``: per (method, group kind) how well the predictions follow the actual dloss, kinds apart
  (pooled over kinds, the group size alone would make the correlation). Over a kind's G groups and m test prompts,
  with P [m, G] the predictions and D [m, G] the actual changes:
  ``per_test`` = mean over prompts of Spearman_g(P[j, :], D[j, :]) (G >= 3; the attribution question: which
  removal moves THIS prompt most), ``centred`` = Spearman over all pairs of P and D each centred per prompt over
  the groups (G >= 2), and ``spearman`` = the Spearman over all (group, prompt) pairs as they are (pooled, which
  mostly measures which prompts move more). Beside each, the ``control_*`` value of the same figure for the
  row-mean control: every score of prompt j replaced by the method's mean score for j (it knows how strongly a
  method reacts to each prompt and nothing about which training sample matters), predicting |removed| * mean_j.
  A method is only worth its figure where it beats the control.
- ``retrain_lds``: per method the LDS over the ``lds`` subsets with its bootstrap interval (engine.analysis.lds).
- ``retrain_counterfactual``: per (method, checked test prompt) the dloss of that prompt after removing the
  method's top k, beside the dloss after each of the random k-removals (mean, min, max; at least 19 draws), the
  top k's rank among them, the binomial p over the method's prompts, and the noise floor.
- ``retrain_decomposition``: with ``metagrad`` (exact metagradients, engine.model.replay), every method's LDS on
  the prompts that have it, each labelled with what it assumes (:func:`decomposition_rows`).

``metagrad``'s matrix has rows only for its prompts (NaN elsewhere): every figure of a method is taken over the
prompts it covers (:func:`covered`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.stats import binomtest

from engine.analysis.lds import lds
from engine.catalog.analyses import DECOMPOSITION_PARTS, METAGRAD
from engine.evaluation.metrics import spearman_rows

MEASURES = ("mean_abs_dloss", "kl_mean", "abs_behaviour_change", "param_change")
UNPREDICTED = ("noise", "identity", "repeat")  # kinds without a removal at the original seed: no prediction


def _nan_none(x) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def group_rows(groups, results: dict, orig_loss: np.ndarray, orig_behaviour_rate: float) -> list[dict]:
    """retrain_groups rows without ``within_noise`` (see :func:`mark_noise`). ``results``: group_id -> measurement."""
    rows = []
    for g in groups:
        r = results[g.group_id]
        delta = np.array([m["delta_norm"] for m in r["modules"]])
        ba = np.array([m["ba_norm"] for m in r["modules"]])
        merged = np.array([m["merged_norm"] for m in r["modules"]])
        dloss = np.asarray(r["loss"]) - orig_loss
        rate = float(np.mean(r["behaviour"])) if r.get("behaviour") is not None else None
        rows.append({
            "group_id": g.group_id, "kind": g.kind, "description": g.description, "n_removed": len(g.removed),
            "removed": ",".join(map(str, g.removed)), "seed": g.seed,
            "param_change": float(np.sqrt((delta ** 2).sum())),
            "delta_norm_mean": float(delta.mean()), "delta_norm_std": float(delta.std()),
            "ba_norm_mean": float(ba.mean()), "ba_norm_std": float(ba.std()),
            "merged_norm_mean": float(merged.mean()), "merged_norm_std": float(merged.std()),
            "mean_dloss": float(dloss.mean()), "mean_abs_dloss": float(np.abs(dloss).mean()),
            "kl_mean": float(np.mean(r["kl"])), "behaviour_rate": rate,
            "behaviour_change": None if rate is None else rate - orig_behaviour_rate,
            "gen_acc": float(np.mean(r["answer"])) if r.get("answer") is not None else None,
            "identical": bool(r["identical"]), "cached": bool(r["cached"]), "time_s": float(r["train_s"]),
            "steps": None if r.get("steps") is None else int(r["steps"])})
    return rows


def noise_floor(rows: Sequence[dict], measure: str) -> float | None:
    """Largest |value| of ``measure`` over the noise rows (group rows or dicts with the same keys); None if none."""
    key = "behaviour_change" if measure == "abs_behaviour_change" else measure
    vals = [abs(r[key]) for r in rows if r["kind"] == "noise" and r.get(key) is not None]
    return max(vals) if vals else None


def mark_noise(rows: list[dict]) -> None:
    """Set ``within_noise`` (mean |dloss| <= its noise floor) on the removal rows; None without noise and on the
    rows that are no removal at the train seed (noise, identity, repeat)."""
    floor = noise_floor(rows, "mean_abs_dloss")
    for r in rows:
        unpredicted = r["kind"] in UNPREDICTED
        r["within_noise"] = None if floor is None or unpredicted else bool(r["mean_abs_dloss"] <= floor)


def seed_effects(groups, results: dict, orig_loss: np.ndarray) -> dict[str, dict]:
    """Per removal group that has a ``repeat`` at seed s (see engine.analysis.retrain): its effect at the train
    seed, e0_j = L_j(removed, train seed) - L_j(original), beside its effect at s, e1_j = L_j(removed, s) -
    L_j(full set, s) (the ``noise`` group of seed s): ``seed_abs_dloss`` = mean_j |e1_j|, ``seed_spread`` =
    mean_j |e0_j - e1_j| (how much the effect itself moves with the data order; compare with the noise floor)
    and ``seed_rho`` = Spearman_j(e0, e1) (whether the same prompts move). Groups without a repeat are absent."""
    full = {g.seed: np.asarray(results[g.group_id]["loss"]) for g in groups if g.kind == "noise"}
    out = {}
    for r in groups:
        if r.kind != "repeat" or r.seed not in full:
            continue
        e0 = np.asarray(results[r.paired]["loss"]) - orig_loss
        e1 = np.asarray(results[r.group_id]["loss"]) - full[r.seed]
        rho = spearman_rows(e0[None, :], e1[None, :])[0] if len(e0) >= 3 else np.nan
        out[r.paired] = {"seed_abs_dloss": float(np.abs(e1).mean()), "seed_spread": float(np.abs(e0 - e1).mean()),
                         "seed_rho": _nan_none(rho)}
    return out


def test_noise_floor(groups, results: dict, orig_loss: np.ndarray) -> np.ndarray | None:
    """Per test sample the largest |dloss| over the noise retrainings [m], or None without any."""
    noise = [np.abs(np.asarray(results[g.group_id]["loss"]) - orig_loss) for g in groups if g.kind == "noise"]
    return np.max(noise, axis=0) if noise else None


def test_rows(groups, results: dict, orig_loss: np.ndarray) -> list[dict]:
    floor = test_noise_floor(groups, results, orig_loss)
    rows = []
    for g in groups:
        r = results[g.group_id]
        dloss = np.asarray(r["loss"]) - orig_loss
        for j, (d, k) in enumerate(zip(dloss, r["kl"])):
            inside = None if floor is None or g.kind in UNPREDICTED else bool(abs(d) <= floor[j])
            rows.append({"group_id": g.group_id, "test_id": j, "dloss": float(d), "kl": float(k),
                         "noise_floor": None if floor is None else float(floor[j]), "within_noise": inside})
    return rows


def covered(S: np.ndarray) -> np.ndarray:
    """The test prompts [m] (bool) a score matrix has a row for: every method scores every prompt, ``metagrad``
    only those of ``analysis.metagrad_prompts`` (its other rows are NaN). A method's figures are taken over its
    covered prompts only."""
    return np.isfinite(S).all(axis=1)


def predictions(S: np.ndarray, removed: Sequence[int]) -> np.ndarray:
    """Predicted dloss per test sample [m]: the sum of the removed samples' scores."""
    return S[:, list(removed)].sum(axis=1) if len(removed) else np.zeros(S.shape[0])


PER_TEST_MIN_GROUPS = 3  # a per-prompt Spearman across fewer groups is not a correlation


def _centre(X: np.ndarray) -> np.ndarray:
    """Each row minus its mean; a constant row is exactly 0 (not the rounding error of its mean)."""
    out = X - X.mean(axis=1, keepdims=True)
    out[np.ptp(X, axis=1) == 0] = 0.0
    return out


def kind_figures(P: np.ndarray, D: np.ndarray) -> dict:
    """The three figures of one kind from predictions ``P`` and actual changes ``D`` [m tests, G groups] (see the
    module docstring): ``{"spearman", "centred", "per_test", "n_tests"}`` (NaN where undefined; n_tests: prompts
    with a defined per-prompt Spearman)."""
    P, D = np.asarray(P, np.float64), np.asarray(D, np.float64)
    G = P.shape[1]
    pooled = spearman_rows(P.reshape(1, -1), D.reshape(1, -1))[0] if P.size >= 3 else np.nan
    if G >= 2:
        Pc, Dc = _centre(P), _centre(D)
        centred = spearman_rows(Pc.reshape(1, -1), Dc.reshape(1, -1))[0]
    else:
        centred = np.nan
    per = spearman_rows(P, D) if G >= PER_TEST_MIN_GROUPS else np.full(P.shape[0], np.nan)
    ok = np.isfinite(per)
    return {"spearman": pooled, "centred": centred, "per_test": per[ok].mean() if ok.any() else np.nan,
            "n_tests": int(ok.sum())}


def method_rows(groups, results: dict, orig_loss: np.ndarray, matrices: dict[str, np.ndarray]) -> list[dict]:
    """Per (method, kind with a prediction): the figures of :func:`kind_figures` for the method and for its
    row-mean control (``control``, ``control_centred``, ``control_per_test``)."""
    rows = []
    kinds = [k for k in dict.fromkeys(g.kind for g in groups) if k not in UNPREDICTED]
    for method in sorted(matrices):  # one matrix at a time: a ScoreMatrices reads each from the score files
        S = np.asarray(matrices[method], dtype=np.float64)
        ok = covered(S)
        if not ok.any():
            continue
        S = S[ok]
        row_mean = S.mean(axis=1)
        for kind in kinds:
            gs = [g for g in groups if g.kind == kind]
            P = np.stack([predictions(S, g.removed) for g in gs], axis=1)  # [m, G]
            C = np.stack([len(g.removed) * row_mean for g in gs], axis=1)
            D = np.stack([(np.asarray(results[g.group_id]["loss"]) - orig_loss)[ok] for g in gs], axis=1)
            f, c = kind_figures(P, D), kind_figures(C, D)
            rows.append({"method": method, "kind": kind, "spearman": _nan_none(f["spearman"]),
                         "centred": _nan_none(f["centred"]), "per_test": _nan_none(f["per_test"]),
                         "control": _nan_none(c["spearman"]), "control_centred": _nan_none(c["centred"]),
                         "control_per_test": _nan_none(c["per_test"]), "n_tests": f["n_tests"],
                         "n_pairs": int(P.size), "n_groups": len(gs)})
    return rows


def lds_rows(groups, results: dict, matrices: dict[str, np.ndarray], alpha: float, n_boot: int = 1000,
             seed: int = 0, prompts: np.ndarray | None = None) -> list[dict]:
    """Per method the LDS over the ``lds`` groups, with its 95 % bootstrap interval (nothing without them), over
    the method's covered test prompts; ``prompts`` (bool [m]) narrows every method to those prompts."""
    subsets = [g for g in groups if g.kind == "lds"]
    if not subsets:
        return []
    loss = np.stack([np.asarray(results[g.group_id]["loss"]) for g in subsets], axis=1)  # [m, M]
    rows = []
    for method in sorted(matrices):  # one at a time, as in method_rows
        S = np.asarray(matrices[method], dtype=np.float64)
        ok = covered(S) if prompts is None else covered(S) & prompts
        if not ok.any():
            continue
        S = S[ok]
        kept = S.sum(axis=1, keepdims=True) - np.stack([predictions(S, g.removed) for g in subsets], axis=1)
        r = lds(kept, loss[ok], n_boot=n_boot, seed=seed)
        rows.append({"method": method, "lds": _nan_none(r["lds"]), "lds_lo": _nan_none(r["lo"]),
                     "lds_hi": _nan_none(r["hi"]), "n_subsets": len(subsets), "alpha": float(alpha),
                     "n_test": r["n_test"], "n_boot": int(n_boot)})
    return rows


def binomial_p(hits: int, n: int, rate: float) -> float:
    """One-sided binomial p: the chance of at least ``hits`` successes in ``n`` trials at ``rate`` each."""
    return float(binomtest(int(hits), int(n), float(rate), alternative="greater").pvalue) if n > 0 else float("nan")


def counterfactual_rows(groups, results: dict, orig_loss: np.ndarray, k: int) -> list[dict]:
    """Per topk group (method, prompt j): dloss_j after removing the method's top k, beside dloss_j after each of
    the R random k-removals (mean / min / max) and the noise floor of prompt j. ``rank`` = 1 + the number of random
    draws that raise the prompt's loss at least as much (1..R+1; 1 = ``beats_random``: above every draw); for a
    method with no skill the rank is uniform, so it beats every draw with probability 1/(R+1). ``binom_p`` (the
    same on every row of a method): the one-sided binomial p of its number of prompts with rank 1 out of its
    prompts at that rate."""
    randoms = [np.asarray(results[g.group_id]["loss"]) - orig_loss for g in groups if g.kind == "random"]
    floor = test_noise_floor(groups, results, orig_loss)
    rows = []
    for g in groups:
        if g.kind != "topk":
            continue
        method, j = g.method, g.prompt
        d = float(np.asarray(results[g.group_id]["loss"])[j] - orig_loss[j])
        rnd = np.array([r[j] for r in randoms])
        nf = None if floor is None else float(floor[j])
        rank = int(1 + (rnd >= d).sum())
        rows.append({"method": method, "test_id": j, "group_id": g.group_id, "k": int(k), "dloss": d,
                     "random_mean": _nan_none(rnd.mean()) if len(rnd) else None,
                     "random_min": _nan_none(rnd.min()) if len(rnd) else None,
                     "random_max": _nan_none(rnd.max()) if len(rnd) else None, "n_random": int(len(rnd)),
                     "noise_floor": nf, "beats_random": bool(len(rnd)) and rank == 1,
                     "rank": rank if len(rnd) else None, "binom_p": None,
                     "within_noise": None if nf is None else bool(abs(d) <= nf)})
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method and r["n_random"] > 0]
        if mine:
            p = binomial_p(sum(r["beats_random"] for r in mine), len(mine), 1 / (1 + min(r["n_random"] for r in mine)))
            for r in mine:
                r["binom_p"] = p
    return rows


def result_tables(groups, results: dict, matrices: dict[str, np.ndarray], orig_loss: np.ndarray,
                  orig_behaviour_rate: float, k: int, alpha: float, n_boot: int = 1000,
                  seed: int = 0) -> dict[str, list[dict]]:
    """Rows of every retrain_* table (keys: groups, modules, tests, predictions, methods, lds, counterfactual)."""
    orig_loss = np.asarray(orig_loss, dtype=np.float64)
    rows = group_rows(groups, results, orig_loss, orig_behaviour_rate)
    mark_noise(rows)
    effects = seed_effects(groups, results, orig_loss)
    for r in rows:
        r.update(effects.get(r["group_id"], {"seed_abs_dloss": None, "seed_spread": None, "seed_rho": None}))
    preds = []
    for g in groups:
        if g.kind in UNPREDICTED:
            continue
        for method, S in matrices.items():
            preds += [{"group_id": g.group_id, "method": method, "test_id": j, "predicted": float(p)}
                      for j, p in enumerate(predictions(np.asarray(S), g.removed)) if np.isfinite(p)]
    return {
        "groups": rows,
        "modules": [{"group_id": g.group_id, **m} for g in groups for m in results[g.group_id]["modules"]],
        "tests": test_rows(groups, results, orig_loss),
        "predictions": preds,
        "methods": method_rows(groups, results, orig_loss, matrices),
        "lds": lds_rows(groups, results, matrices, alpha, n_boot, seed),
        "counterfactual": counterfactual_rows(groups, results, orig_loss, k),
        "decomposition": decomposition_rows(groups, results, matrices, orig_loss, alpha, n_boot, seed),
    }


def decomposition_rows(groups, results: dict, matrices: dict[str, np.ndarray], orig_loss: np.ndarray, alpha: float,
                       n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Every method's LDS on the test prompts that have ``metagrad`` (the same subsets, the same prompts), each
    with the assumption it stands for (``part``, engine.catalog.analyses.DECOMPOSITION_PARTS), and, on every row,
    how far the LDS subsets move those prompts' losses (``signal``: mean |dloss| over subsets and prompts) beside
    their noise floor (``noise_floor``: the mean over the prompts of the largest |dloss| of a reshuffle; NULL
    without noise retrainings): an LDS near 0 means little where the signal is inside the noise. Nothing without
    metagrad or LDS subsets."""
    subsets = [g for g in groups if g.kind == "lds"]
    if METAGRAD not in matrices or not subsets:
        return []
    on = covered(np.asarray(matrices[METAGRAD], dtype=np.float64))
    if not on.any():
        return []
    D = np.stack([np.asarray(results[g.group_id]["loss"]) - orig_loss for g in subsets], axis=1)[on]
    floor = test_noise_floor(groups, results, orig_loss)
    extra = {"signal": float(np.abs(D).mean()), "noise_floor": None if floor is None else float(floor[on].mean()),
             "n_prompts": int(on.sum())}
    parts = dict(DECOMPOSITION_PARTS)
    rows = lds_rows(groups, results, matrices, alpha, n_boot, seed, prompts=on)
    order = {m: i for i, m in enumerate(parts)}
    rows.sort(key=lambda r: (order.get(r["method"], len(order)), r["method"]))
    return [{"method": r["method"], "part": parts.get(r["method"], ""), "lds": r["lds"], "lds_lo": r["lds_lo"],
             "lds_hi": r["lds_hi"], "n_test": r["n_test"], "n_subsets": r["n_subsets"], **extra} for r in rows]
