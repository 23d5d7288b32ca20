"""Analysis 3: parameter change vs output change, by retraining with groups of training samples removed.

Every retraining starts from the SAME initial LoRA weights, with the same seed (so the same shuffling generator
and dropout masks) and the same hyperparameters as the original fine-tune; only the training set differs. A
control retraining with nothing removed must reproduce the original adapter bit for bit in the same process
(tested), so every change measured below is caused by the removal (its row, group ``none``, shows the noise
floor when retrainings run in worker processes with fewer threads).

Groups (``removal_groups``): single samples, every sample of one label (e.g. all harmful requests), and
random subsets of a fraction of the training set (several seeds).

Per retrained model, against the original:
- parameter change: per LoRA module m, ``dW_m = (alpha/r) (B'A' - BA)``; ``delta_norm = ||dW_m||_F``, the total
  ``sqrt(sum_m ||dW_m||_F^2)``, and the paper's per-module ``||(alpha/r) B'A'||_F`` (mean and std over modules);
- output change: per test sample the change of its teacher-forced loss ``dloss = L'(z') - L(z')``; the mean
  KL(original || retrained) of the next-token distributions at the response positions; the change of the
  behaviour rate (share of greedy generations showing the task's target behaviour).
- each attribution method's prediction for test sample j: ``sum_{i removed} S[j, i]`` (scores at the last
  checkpoint; larger s = more responsible, so removing it should RAISE the test loss: the prediction and
  ``dloss`` should correlate positively). ``spearman_pooled`` = Spearman over every (group, test sample) pair;
  ``lds`` = the linear-datamodeling score: per test sample, Spearman across the random subsets, averaged.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from engine import metrics
from engine.analysis.outputs import generation_report, response_kl, sample_losses
from engine.finetune import finetune, set_lora_state
from engine.formatting import Encoded


@dataclass(frozen=True)
class Group:
    """A set of training samples to remove. kind: "none" | "single" | "label" | "random"."""

    group_id: str
    kind: str
    description: str
    removed: tuple[int, ...]


def removal_groups(train_labels: Sequence[str], *, n_single: int, n_labels: int, fraction: float, n_random: int,
                   seed: int) -> list[Group]:
    """The control group, ``n_single`` random single samples, the first ``n_labels`` labels in sorted order
    (0 = all labels), ``n_random`` random subsets of ``round(fraction * n)`` samples (at least 1)."""
    n = len(train_labels)
    rng = np.random.default_rng([seed, 0])  # streams [seed, 0] (single) and [seed, 1, s] (random) differ
    groups = [Group("none", "none", "nothing removed (control)", ())]
    for i in sorted(rng.choice(n, size=min(n_single, n), replace=False).tolist()):
        groups.append(Group(f"single-{i}", "single", f"training sample {i} ({train_labels[i]})", (i,)))
    labels = sorted(set(train_labels))
    for lab in labels[: n_labels or len(labels)]:
        ids = tuple(i for i, x in enumerate(train_labels) if x == lab)
        groups.append(Group(f"label-{lab}", "label", f"all {len(ids)} samples labelled {lab!r}", ids))
    size = max(1, int(round(fraction * n)))
    for s in range(n_random):
        ids = tuple(sorted(np.random.default_rng([seed, 1, s]).choice(n, size=size, replace=False).tolist()))
        groups.append(Group(f"random-{s}", "random", f"random {size} of {n} (seed {s})", ids))
    return groups


# ---------------------------------------------------------------------------------------------- parameters


def lora_modules(state: dict[str, torch.Tensor]) -> dict[str, tuple[str, str]]:
    """LoRA module name -> (lora_A key, lora_B key) in a peft adapter state dict."""
    out = {}
    for key in sorted(state):
        if ".lora_A." in key:
            b_key = key.replace(".lora_A.", ".lora_B.")
            if b_key in state:
                out[key.split(".lora_A.")[0].removeprefix("base_model.model.")] = (key, b_key)
    return out


def parameter_change(orig: dict[str, torch.Tensor], new: dict[str, torch.Tensor], scaling: float) -> list[dict]:
    """Per module: ``delta_norm = ||scaling (B'A' - BA)||_F`` and ``ba_norm = ||scaling B'A'||_F`` (float64)."""
    rows = []
    for module, (a, b) in lora_modules(new).items():
        w_new = scaling * (new[b].double() @ new[a].double())
        w_old = scaling * (orig[b].double() @ orig[a].double())
        rows.append({"module": module, "delta_norm": float(torch.linalg.matrix_norm(w_new - w_old)),
                     "ba_norm": float(torch.linalg.matrix_norm(w_new))})
    return rows


# ---------------------------------------------------------------------------------------------- retraining


@dataclass
class Context:
    """Everything a retraining needs, shared by the in-process path and forked workers."""

    model: object
    tok: object
    initial: dict
    original: dict
    train_enc: list[Encoded]
    test_enc: list[Encoded]
    test_refs: list[str]
    marker: str | None
    train_cfg: object
    device: torch.device
    scaling: float
    max_new_tokens: int
    batch_size: int
    orig_loss: np.ndarray
    orig_behaviour: np.ndarray


def retrain(ctx: Context, removed: Sequence[int]) -> dict[str, torch.Tensor]:
    """Fine-tune from ``ctx.initial`` on the training set without ``removed``; return the final LoRA state."""
    drop = set(removed)
    keep = [e for i, e in enumerate(ctx.train_enc) if i not in drop]
    set_lora_state(ctx.model, ctx.initial)
    torch.manual_seed(ctx.train_cfg.seed)  # as the pipeline does before the original fine-tune
    result = finetune(ctx.model, keep, ctx.tok.pad_token_id, ctx.train_cfg, ctx.device, progress=False)
    return result.epochs[-1]


def measure(ctx: Context, group: Group) -> dict:
    """Retrain without ``group`` and measure the changes (JSON-able dict; arrays as lists)."""
    t = time.perf_counter()
    state = retrain(ctx, group.removed)
    modules = parameter_change(ctx.original, state, ctx.scaling)
    set_lora_state(ctx.model, state)
    loss = sample_losses(ctx.model, ctx.test_enc, ctx.tok.pad_token_id, ctx.device, ctx.batch_size)
    kl = response_kl(ctx.model, ctx.original, state, ctx.test_enc, ctx.tok.pad_token_id, ctx.device,
                     ctx.batch_size)
    answer, behaviour = generation_report(ctx.model, ctx.tok, ctx.test_enc, ctx.test_refs, ctx.marker, ctx.device,
                                          ctx.max_new_tokens, ctx.batch_size)
    identical = all(torch.equal(state[k], ctx.original[k]) for k in ctx.original)
    return {"group_id": group.group_id, "modules": modules, "dloss": (loss - ctx.orig_loss).tolist(),
            "kl": kl.tolist(), "behaviour_rate": float(behaviour.mean()), "gen_acc": float(answer.mean()),
            "identical": identical, "time_s": time.perf_counter() - t}


def auto_workers(n_groups: int, device: torch.device) -> int:
    """Parallel retraining processes: 1 on CUDA (one GPU, and CUDA cannot be forked) and on small machines,
    where one process already keeps every core busy; else one per 4 cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.type != "cpu" or cores < 8:
        return 1
    return max(1, min(n_groups, cores // 4))


def run_retrainings(ctx: Context, groups: Sequence[Group], workers: int = 1,
                    progress: Callable[[str], None] | None = None) -> list[dict]:
    """:func:`measure` for every group, in this process (``workers`` <= 1) or in forked worker processes that
    share the already-loaded base model copy-on-write. Results in ``groups`` order; the model is left in the
    original state. Raises RuntimeError naming the group if any retraining fails."""
    try:
        if workers <= 1 or len(groups) <= 1:
            out = []
            for i, g in enumerate(groups):
                if progress:
                    progress(f"retraining {i + 1}/{len(groups)}: without {g.description}")
                out.append(measure(ctx, g))
            return out
        return _run_forked(ctx, list(groups), workers, progress)
    finally:
        set_lora_state(ctx.model, ctx.original)


def _run_forked(ctx: Context, groups: list[Group], workers: int, progress) -> list[dict]:
    import multiprocessing

    if ctx.device.type != "cpu":
        raise RuntimeError("parallel retraining forks the process, which CUDA does not survive; use 1 worker")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // workers)
    fork = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory(prefix="retrain-") as tmp:
        procs = [fork.Process(target=_worker, args=(ctx, groups[w::workers], Path(tmp), threads), daemon=True)
                 for w in range(workers)]
        for p in procs:
            p.start()
        done = 0
        while any(p.is_alive() for p in procs):
            time.sleep(0.5)
            now = len(list(Path(tmp).glob("*.json")))
            if progress and now != done:
                progress(f"retraining: {now}/{len(groups)} done ({workers} processes)")
            done = now
        results = {}
        for g in groups:
            path = Path(tmp) / f"{g.group_id}.json"
            if not path.exists():
                codes = [p.exitcode for p in procs]
                raise RuntimeError(f"retraining without {g.description} produced no result "
                                   f"(worker exit codes {codes})")
            r = json.loads(path.read_text(encoding="utf-8"))
            if "error" in r:
                raise RuntimeError(f"retraining without {g.description} failed: {r['error']}")
            results[g.group_id] = r
    return [results[g.group_id] for g in groups]


def _worker(ctx: Context, groups: list[Group], out: Path, threads: int) -> None:  # pragma: no cover - child
    torch.set_num_threads(threads)
    code = 0
    for g in groups:
        try:
            r = measure(ctx, g)
        except Exception as e:  # noqa: BLE001 - reported to the parent, which raises
            r, code = {"error": f"{type(e).__name__}: {e}"}, 1
        tmp = out / f".{g.group_id}.json.tmp"
        tmp.write_text(json.dumps(r), encoding="utf-8")
        tmp.rename(out / f"{g.group_id}.json")
    os._exit(code)


# ---------------------------------------------------------------------------------------------- tables


def result_tables(groups: Sequence[Group], results: Sequence[dict], matrices: dict[str, np.ndarray],
                  orig_behaviour_rate: float) -> dict[str, list[dict]]:
    """Rows of retrain_groups, retrain_modules, retrain_tests, retrain_predictions and retrain_methods."""
    out: dict[str, list[dict]] = {k: [] for k in ("groups", "modules", "tests", "predictions", "methods")}
    for g, r in zip(groups, results):
        delta = np.array([m["delta_norm"] for m in r["modules"]])
        ba = np.array([m["ba_norm"] for m in r["modules"]])
        dloss = np.asarray(r["dloss"])
        out["groups"].append({
            "group_id": g.group_id, "kind": g.kind, "description": g.description, "n_removed": len(g.removed),
            "removed": ",".join(map(str, g.removed)), "param_change": float(np.sqrt((delta ** 2).sum())),
            "delta_norm_mean": float(delta.mean()), "delta_norm_std": float(delta.std()),
            "ba_norm_mean": float(ba.mean()), "ba_norm_std": float(ba.std()),
            "mean_dloss": float(dloss.mean()), "mean_abs_dloss": float(np.abs(dloss).mean()),
            "kl_mean": float(np.mean(r["kl"])), "behaviour_rate": r["behaviour_rate"],
            "behaviour_change": r["behaviour_rate"] - orig_behaviour_rate, "gen_acc": r["gen_acc"],
            "identical": bool(r["identical"]), "time_s": r["time_s"]})
        out["modules"] += [{"group_id": g.group_id, **m} for m in r["modules"]]
        out["tests"] += [{"group_id": g.group_id, "test_id": j, "dloss": float(d), "kl": float(k)}
                         for j, (d, k) in enumerate(zip(r["dloss"], r["kl"]))]
        for method, S in matrices.items():
            pred = S[:, list(g.removed)].sum(1) if g.removed else np.zeros(S.shape[0])
            out["predictions"] += [{"group_id": g.group_id, "method": method, "test_id": j, "predicted": float(p)}
                                   for j, p in enumerate(pred)]
    out["methods"] = method_agreement(groups, results, matrices)
    return out


def method_agreement(groups: Sequence[Group], results: Sequence[dict], matrices: dict[str, np.ndarray]) -> list[dict]:
    """Per method: Spearman of predicted vs actual dloss pooled over (group, test) pairs (control excluded),
    and the LDS over the random groups (NaN with fewer than 3 random groups)."""
    rows = []
    pairs = [(g, np.asarray(r["dloss"])) for g, r in zip(groups, results) if g.removed]
    rand = [(g, d) for g, d in pairs if g.kind == "random"]
    for method, S in sorted(matrices.items()):
        pred = [S[:, list(g.removed)].sum(1) for g, _ in pairs]
        pooled = _spearman(np.concatenate(pred), np.concatenate([d for _, d in pairs])) if pairs else float("nan")
        lds = float("nan")
        if len(rand) >= 3:
            P = np.stack([S[:, list(g.removed)].sum(1) for g, _ in rand], axis=1)  # [m, n_random]
            A = np.stack([d for _, d in rand], axis=1)
            per_test = [_spearman(p, a) for p, a in zip(P, A)]
            lds = float(np.nanmean(per_test)) if np.any(np.isfinite(per_test)) else float("nan")
        rows.append({"method": method, "spearman_pooled": pooled, "lds": lds,
                     "n_pairs": int(sum(len(d) for _, d in pairs)), "n_random": len(rand)})
    return rows


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """engine.metrics.spearman, NaN for fewer than 3 points (a rank correlation of two points is always +-1)."""
    return float("nan") if len(x) < 3 else metrics.spearman(x, y)
