"""The retraining analysis' tables, from the groups (engine.analysis.retrain.plan) and the measurements of their
retrainings. Pure numpy: tested against explicit loops.

Noise floor. For a measure x of a retrained model (per test sample: |dloss_j|; per group: mean |dloss|, mean KL,
|Δ behaviour rate|, ‖ΔW‖), the noise floor is the largest value x takes over the ``noise`` retrainings (the full set
with other data-order seeds, against the original). A removal's change with |x| <= that floor is "inside the
noise": a reshuffle of the same data moves the model as much. Without noise retrainings it is undefined (NULL).

Tables (columns in engine.analysis.stages.TABLES):
- ``retrain_groups``: one row per group; ``within_noise`` judged on mean |dloss|.
- ``retrain_modules``: per (group, LoRA module) the three norms of engine.analysis.retrain.parameter_change.
- ``retrain_tests``: per (group, test sample) dloss, KL, the test sample's noise floor and whether |dloss| is inside.
- ``retrain_predictions``: per (group except noise, method, test sample) the prediction sum_{i removed} S[j, i].
- ``retrain_methods``: per (method, group kind) the Spearman of predicted vs actual dloss over that kind's
  (group, test sample) pairs — kinds reported apart, since pooling single, whole-label and random groups lets the
  group size alone make the correlation.
- ``retrain_lds``: per method the LDS over the ``lds`` subsets with its bootstrap interval (engine.analysis.lds).
- ``retrain_counterfactual``: per (method, checked test prompt) the dloss of that prompt after removing the
  method's top k, beside the dloss after each of the k random removals (mean, min, max) and the noise floor.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from engine.analysis.lds import lds
from engine.evaluation.metrics import spearman_rows

MEASURES = ("mean_abs_dloss", "kl_mean", "abs_behaviour_change", "param_change")


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
            "identical": bool(r["identical"]), "cached": bool(r["cached"]), "time_s": float(r["train_s"])})
    return rows


def noise_floor(rows: Sequence[dict], measure: str) -> float | None:
    """Largest |value| of ``measure`` over the noise rows (group rows or dicts with the same keys); None if none."""
    key = "behaviour_change" if measure == "abs_behaviour_change" else measure
    vals = [abs(r[key]) for r in rows if r["kind"] == "noise" and r.get(key) is not None]
    return max(vals) if vals else None


def mark_noise(rows: list[dict]) -> None:
    """Set ``within_noise`` (mean |dloss| <= its noise floor) on the non-noise group rows; None without noise."""
    floor = noise_floor(rows, "mean_abs_dloss")
    for r in rows:
        r["within_noise"] = None if floor is None or r["kind"] == "noise" else bool(r["mean_abs_dloss"] <= floor)


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
            inside = None if floor is None or g.kind == "noise" else bool(abs(d) <= floor[j])
            rows.append({"group_id": g.group_id, "test_id": j, "dloss": float(d), "kl": float(k),
                         "noise_floor": None if floor is None else float(floor[j]), "within_noise": inside})
    return rows


def predictions(S: np.ndarray, removed: Sequence[int]) -> np.ndarray:
    """Predicted dloss per test sample [m]: the sum of the removed samples' scores."""
    return S[:, list(removed)].sum(axis=1) if len(removed) else np.zeros(S.shape[0])


def method_rows(groups, results: dict, orig_loss: np.ndarray, matrices: dict[str, np.ndarray]) -> list[dict]:
    """Per (method, kind except noise): Spearman of predicted vs actual dloss over that kind's pairs."""

    rows = []
    kinds = [k for k in dict.fromkeys(g.kind for g in groups) if k != "noise"]
    for method in sorted(matrices):  # one matrix at a time: a ScoreMatrices reads each from the score files
        S = matrices[method]
        for kind in kinds:
            gs = [g for g in groups if g.kind == kind]
            pred = np.concatenate([predictions(S, g.removed) for g in gs])
            actual = np.concatenate([np.asarray(results[g.group_id]["loss"]) - orig_loss for g in gs])
            rho = spearman_rows(pred[None, :], actual[None, :])[0] if len(pred) >= 3 else np.nan
            rows.append({"method": method, "kind": kind, "spearman": _nan_none(rho), "n_pairs": int(len(pred)),
                         "n_groups": len(gs)})
    return rows


def lds_rows(groups, results: dict, matrices: dict[str, np.ndarray], alpha: float, n_boot: int = 1000,
             seed: int = 0) -> list[dict]:
    """Per method the LDS over the ``lds`` groups, with its 95 % bootstrap interval (nothing without them)."""
    subsets = [g for g in groups if g.kind == "lds"]
    if not subsets:
        return []
    loss = np.stack([np.asarray(results[g.group_id]["loss"]) for g in subsets], axis=1)  # [m, M]
    rows = []
    for method in sorted(matrices):  # one at a time, as in method_rows
        S = np.asarray(matrices[method], dtype=np.float64)
        kept = S.sum(axis=1, keepdims=True) - np.stack([predictions(S, g.removed) for g in subsets], axis=1)
        r = lds(kept, loss, n_boot=n_boot, seed=seed)
        rows.append({"method": method, "lds": _nan_none(r["lds"]), "lds_lo": _nan_none(r["lo"]),
                     "lds_hi": _nan_none(r["hi"]), "n_subsets": len(subsets), "alpha": float(alpha),
                     "n_test": r["n_test"], "n_boot": int(n_boot)})
    return rows


def counterfactual_rows(groups, results: dict, orig_loss: np.ndarray, k: int) -> list[dict]:
    """Per topk group (method, prompt j): dloss_j after removing the method's top k, beside dloss_j after each
    random k-removal (mean / min / max over the draws) and the noise floor of prompt j."""
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
        rows.append({"method": method, "test_id": j, "group_id": g.group_id, "k": int(k), "dloss": d,
                     "random_mean": _nan_none(rnd.mean()) if len(rnd) else None,
                     "random_min": _nan_none(rnd.min()) if len(rnd) else None,
                     "random_max": _nan_none(rnd.max()) if len(rnd) else None, "n_random": int(len(rnd)),
                     "noise_floor": nf, "beats_random": bool(len(rnd)) and bool(d > rnd.max()),
                     "within_noise": None if nf is None else bool(abs(d) <= nf)})
    return rows


def result_tables(groups, results: dict, matrices: dict[str, np.ndarray], orig_loss: np.ndarray,
                  orig_behaviour_rate: float, k: int, alpha: float, n_boot: int = 1000,
                  seed: int = 0) -> dict[str, list[dict]]:
    """Rows of every retrain_* table (keys: groups, modules, tests, predictions, methods, lds, counterfactual)."""
    orig_loss = np.asarray(orig_loss, dtype=np.float64)
    rows = group_rows(groups, results, orig_loss, orig_behaviour_rate)
    mark_noise(rows)
    preds = []
    for g in groups:
        if g.kind == "noise":
            continue
        for method, S in matrices.items():
            preds += [{"group_id": g.group_id, "method": method, "test_id": j, "predicted": float(p)}
                      for j, p in enumerate(predictions(np.asarray(S), g.removed))]
    return {
        "groups": rows,
        "modules": [{"group_id": g.group_id, **m} for g in groups for m in results[g.group_id]["modules"]],
        "tests": test_rows(groups, results, orig_loss),
        "predictions": preds,
        "methods": method_rows(groups, results, orig_loss, matrices),
        "lds": lds_rows(groups, results, matrices, alpha, n_boot, seed),
        "counterfactual": counterfactual_rows(groups, results, orig_loss, k),
    }
