"""Analysis 3: parameter change vs output change, by retraining with training samples removed; and whether each
attribution method predicts what the removal does (LDS, counterfactual check).

Every retraining starts from the SAME initial LoRA weights with the same hyperparameters, the same data order and
the same dropout masks as the original fine-tune: one permutation of the full training set per epoch and dropout
masks fixed per (epoch, sample, position) (engine.model.finetune, engine.model.dropout). A removed sample keeps its
place in its batch with loss weight 0, so every retraining takes exactly the original's optimizer steps under the
same learning-rate schedule (``steps`` in the tables; skipping the removed samples instead would also take steps
away, which alone moves an Adam-trained adapter more than the removal). A retraining with nothing removed is the
original run itself (tested, and checked in every run: the ``identity`` group), so a change is caused by the
removal, not by a new SGD trajectory. What a new trajectory alone does is measured
separately: the **noise floor** = ``noise_seeds`` retrainings of the full set with other data-order (and dropout)
seeds; a change no larger than the noise floor's is marked as inside the noise.

Retrainings (:func:`plan`, each a :class:`Group`; groups that remove the same set share one retraining):
- ``identity``: nothing removed at the train seed, the standing check that a retraining reproduces the original;
- ``noise``: nothing removed, seed = train seed + s (s = 1..noise_seeds);
- ``single``: one random sample; ``label``: every sample of one label; ``random``: k = round(fraction * n) random
  samples (``retrain_seeds`` draws, with generations; with the counterfactual check, topped up to
  :data:`CF_RANDOM_DRAWS` draws, its baseline);
- ``topk``: for each of ``cf_prompts`` test prompts (spread over the labels) and each checked method, that
  method's top k training samples for the prompt (the counterfactual check, Bergson-style remove-and-retrain);
  ``metagrad`` (engine.analysis.metagrad) is always checked, on the prompts it has;
- ``lds``: ``lds_subsets`` random subsets keeping ``lds_fraction`` of the set (engine.analysis.lds);
- ``repeat``: with a noise floor, the single, label and random removals again at seed + 1, so that a removal's
  effect there (against the full set at seed + 1, ``noise-1``) can be set beside its effect at the train seed:
  the noise that belongs to the paired question (engine.analysis.retrain_tables.seed_rows).

Per retrained model, against the original (engine.analysis.retrain_tables builds the tables):
- parameter change per LoRA module m: ``delta_norm = ||(alpha/r)(B'A' - BA)||_F`` (the change of the merged
  update), its total over modules, the authors' ``||B'A'||_F`` (their ``delta.py``, without alpha/r) and the merged
  update's ``||(alpha/r) B'A'||_F``, each as mean and std over modules;
- output change: per test sample ``dloss = L'(z') - L(z')``; the mean KL(original || retrained) of the next-token
  distributions at the response positions; for the removal groups also the behaviour rate of greedy generations;
- each method's prediction for test sample j: ``sum_{i removed} S[j, i]`` (scores at the last checkpoint; larger s
  = more responsible, so removing it should RAISE the test loss: prediction and dloss should correlate positively).

Retrained adapters are kept in the retrain bank (engine.analysis.bank) and reused by later runs. Retrainings run
in this process or in forked worker processes that share the loaded base model (CPU only).
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

from engine.analysis.bank import RetrainBank, eval_key
from engine.analysis.lds import lds_subsets
from engine.analysis.outputs import generation_report, loss_and_kl
from engine.catalog.analyses import METAGRAD
from engine.data.encoding import Encoded
from engine.evaluation import metrics
from engine.model.adapters import same_tensors
from engine.model.finetune import finetune, set_lora_state

REMOVAL = "weight 0 in the original batches"  # how a retraining removes samples (retrain-bank key material)
FULL_KINDS = ("noise", "single", "label", "random")  # measured with generations too (behaviour rate)
KINDS = ("identity", "noise", "single", "label", "random", "topk", "lds", "repeat")
# random k-sets the counterfactual check compares a method's top k with: a method with no skill then beats all of
# them on a prompt with probability 1 / (CF_RANDOM_DRAWS + 1) = 0.05
CF_RANDOM_DRAWS = 19


@dataclass(frozen=True)
class Group:
    """A retraining: ``removed`` training ids, data-order/dropout ``seed``. kind: one of :data:`KINDS`."""

    group_id: str
    kind: str
    description: str
    removed: tuple[int, ...]
    seed: int
    method: str = ""  # topk: the method whose top k is removed, for test prompt ``prompt``
    prompt: int = -1
    generate: bool = True  # measure greedy generations too (the kinds of FULL_KINDS only)
    paired: str = ""  # repeat: the group whose removal this repeats at another seed

    @property
    def retraining(self) -> tuple[tuple[int, ...], int]:
        return self.removed, self.seed


def removal_groups(train_labels: Sequence[str], *, n_single: int, n_labels: int, fraction: float, n_random: int,
                   seed: int) -> list[Group]:
    """``n_single`` random single samples, the first ``n_labels`` labels in sorted order (0 = all labels),
    ``n_random`` random sets of ``k = round(fraction * n)`` samples (at least 1); all with ``seed``."""
    n = len(train_labels)
    rng = np.random.default_rng([seed, 0])  # streams [seed, 0] (single) and [seed, 1, s] (random) differ
    groups = []
    for i in sorted(rng.choice(n, size=min(n_single, n), replace=False).tolist()):
        shown = f" ({train_labels[i]})" if train_labels[i] is not None else ""
        groups.append(Group(f"single-{i}", "single", f"training sample {i}{shown}", (i,), seed))
    labels = sorted({x for x in train_labels if x is not None})  # none in an unlabelled dataset: no label groups
    for lab in labels[: n_labels or len(labels)]:
        ids = tuple(i for i, x in enumerate(train_labels) if x == lab)
        groups.append(Group(f"label-{lab}", "label", f"all {len(ids)} samples labelled {lab!r}", ids, seed))
    return groups + random_groups(n, removal_k(n, fraction), range(n_random), seed)


def random_groups(n: int, k: int, draws: Sequence[int], seed: int, generate: bool = True) -> list[Group]:
    """Random k-sets number ``draws`` (draw s from the stream ``[seed, 1, s]``: the same set in every run)."""
    out = []
    for s in draws:
        ids = tuple(sorted(np.random.default_rng([seed, 1, s]).choice(n, size=k, replace=False).tolist()))
        out.append(Group(f"random-{s}", "random", f"{k} random samples (draw {s})", ids, seed, generate=generate))
    return out


def removal_k(n: int, fraction: float) -> int:
    """k of the random sets and of the counterfactual top-k: ``round(fraction * n)``, at least 1, below n."""
    return min(n - 1, max(1, int(round(fraction * n))))


def noise_groups(n_seeds: int, seed: int) -> list[Group]:
    """Retrainings of the full set with the data-order seeds ``seed + 1 .. seed + n_seeds``."""
    return [Group(f"noise-{s}", "noise", f"full set, data-order seed {seed + s}", (), seed + s)
            for s in range(1, n_seeds + 1)]


def identity_group(seed: int) -> Group:
    """The standing check: nothing removed at the train seed, which must reproduce the original adapter."""
    return Group("identity", "identity", f"nothing removed, data-order seed {seed}: must equal the original", (),
                 seed, generate=False)


def repeat_groups(removals: Sequence[Group], seed: int) -> list[Group]:
    """Each removal again at data-order seed ``seed`` (paired with the full set's retraining at that seed, the
    ``noise`` group of that seed): how much a removal's effect itself depends on the data order."""
    return [Group(f"{g.group_id}@seed{seed}", "repeat", f"{g.description}, data-order seed {seed}", g.removed, seed,
                  generate=False, paired=g.group_id) for g in removals]


def cf_prompts(test_labels: Sequence[str], n: int, seed: int) -> list[int]:
    """``n`` test ids spread over the labels: labels in sorted order, round robin, a random prompt of each."""
    rng = np.random.default_rng([seed, 4])
    pools = {lab: rng.permutation([j for j, x in enumerate(test_labels) if x == lab]).tolist()
             for lab in sorted(set(test_labels))}
    out: list[int] = []
    while len(out) < min(n, len(test_labels)):
        for lab in pools:
            if pools[lab] and len(out) < n:
                out.append(int(pools[lab].pop(0)))
    return out


def topk_groups(matrices: dict[str, np.ndarray], methods: Sequence[str], prompts: Sequence[int], k: int,
                seed: int) -> list[Group]:
    """One group per (prompt, method): the method's top ``k`` training samples for that prompt (ranking rule of
    engine.evaluation.metrics), in prompt-then-method order."""
    out = []
    for j in prompts:
        for m in methods:
            if not np.isfinite(matrices[m][j]).all():  # metagrad has rows for its own prompts only
                continue
            top = tuple(sorted(metrics.ranking(matrices[m][j:j + 1])[0, :k].tolist()))
            out.append(Group(f"topk-{m}-t{j}", "topk", f"top {k} of {m} for test prompt {j}", top, seed, m, j))
    return out


def plan(train_labels: Sequence[str], test_labels: Sequence[str], matrices: dict[str, np.ndarray], a,
         seed: int) -> tuple[list[Group], list[int], int]:
    """(groups, counterfactual prompts, k) for an ``AnalysisSpec`` ``a``."""
    n = len(train_labels)
    k = removal_k(n, a.retrain_fraction)
    groups = [identity_group(seed)] + noise_groups(a.noise_seeds, seed)
    removals = removal_groups(train_labels, n_single=a.retrain_single, n_labels=a.retrain_labels,
                              fraction=a.retrain_fraction, n_random=a.retrain_seeds, seed=seed)
    groups += removals
    checked = [m for m in (a.cf_methods or sorted(matrices)) if m in matrices]
    if METAGRAD in matrices and METAGRAD not in checked:  # the exact answer is checked beside whichever methods
        checked.append(METAGRAD)
    prompts = cf_prompts(test_labels, a.cf_prompts, seed) if checked and a.retrain_seeds else []
    groups += topk_groups(matrices, checked, prompts, k, seed)
    if prompts:  # the counterfactual's baseline: at least CF_RANDOM_DRAWS random k-sets (no generations needed)
        groups += random_groups(n, k, range(a.retrain_seeds, CF_RANDOM_DRAWS), seed, generate=False)
    size = n - len(lds_subsets(n, a.lds_fraction, 1, seed)[0]) if a.lds_subsets else 0
    for s, removed in enumerate(lds_subsets(n, a.lds_fraction, a.lds_subsets, seed)):
        groups.append(Group(f"lds-{s}", "lds", f"random subset keeping {size} of {n} (subset {s})", removed, seed))
    if a.noise_seeds:  # paired with the first reshuffle, the full set at seed + 1
        groups += repeat_groups(removals, seed + 1)
    return groups, prompts, k


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
    """Per module (float64): ``delta_norm = ||scaling (B'A' - BA)||_F``, the authors' ``ba_norm = ||B'A'||_F``
    (no alpha/r) and ``merged_norm = ||scaling B'A'||_F`` (the merged LoRA update)."""
    rows = []
    for module, (a, b) in lora_modules(new).items():
        ba_new = new[b].double() @ new[a].double()
        ba_old = orig[b].double() @ orig[a].double()
        rows.append({"module": module, "delta_norm": float(torch.linalg.matrix_norm(scaling * (ba_new - ba_old))),
                     "ba_norm": float(torch.linalg.matrix_norm(ba_new)),
                     "merged_norm": float(torch.linalg.matrix_norm(scaling * ba_new))})
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
    bank: RetrainBank
    eval_settings: dict  # what a measurement depends on besides the adapter (engine.analysis.bank.eval_key)


def removal_weights(n: int, removed: Sequence[int]) -> np.ndarray:
    """Loss weights [n] of a retraining without ``removed``: 0 for the removed ids, 1 for every other sample."""
    w = np.ones(n, dtype=np.float32)
    bad = [int(i) for i in removed if not 0 <= int(i) < n]
    if bad:
        raise ValueError(f"removed training ids {bad} are outside 0..{n - 1}")
    w[list(removed)] = 0.0
    return w


def retrain(ctx: Context, removed: Sequence[int], seed: int) -> tuple[dict[str, torch.Tensor], int]:
    """Fine-tune from ``ctx.initial`` with ``removed`` at weight 0 in the original batches (same data order,
    dropout masks and steps as the original for ``seed`` = the train seed); return (final LoRA state, steps)."""
    set_lora_state(ctx.model, ctx.initial)
    result = finetune(ctx.model, ctx.train_enc, ctx.tok.pad_token_id, ctx.train_cfg, ctx.device, progress=False,
                      weights=removal_weights(len(ctx.train_enc), removed), seed=seed)
    return result.epochs[-1], len(result.lrs)


def _eval_key(ctx: Context, full: bool) -> str:
    return eval_key(ctx.eval_settings["test"], ctx.eval_settings["reference"],
                    {**ctx.eval_settings, "full": bool(full)})


def measure(ctx: Context, removed: Sequence[int], seed: int, full: bool) -> dict:
    """Retrain (or load from the bank) and measure: JSON-able dict with the LoRA state's parameter change per
    module, per-test loss and KL, and with ``full`` the greedy generations' answer/behaviour flags."""
    key = ctx.bank.key(removed, seed)
    stored = ctx.bank.load_state(key)
    t = time.perf_counter()
    if stored is None:
        state, steps = retrain(ctx, removed, seed)
        train_s = time.perf_counter() - t
        ctx.bank.save_state(key, state, {"removed": sorted(removed), "seed": seed, "train_s": train_s,
                                         "steps": steps})
        cached = False
    else:
        state, meta = stored
        train_s, cached, steps = float(meta.get("train_s", 0.0)), True, meta.get("steps")
    ev = ctx.bank.load_eval(key, _eval_key(ctx, full)) or (ctx.bank.load_eval(key, _eval_key(ctx, True))
                                                          if not full else None)
    if ev is None:
        loss, kl = loss_and_kl(ctx.model, ctx.original, state, ctx.test_enc, ctx.tok.pad_token_id, ctx.device,
                               ctx.batch_size)
        ev = {"loss": loss.tolist(), "kl": kl.tolist()}
        if full:
            answer, behaviour = generation_report(ctx.model, ctx.tok, ctx.test_enc, ctx.test_refs, ctx.marker,
                                                  ctx.device, ctx.max_new_tokens, ctx.batch_size)
            ev.update(answer=answer.tolist(), behaviour=behaviour.tolist())
        ctx.bank.save_eval(key, _eval_key(ctx, full), ev)
    identical = same_tensors(state, ctx.original)
    return {"key": key, "modules": parameter_change(ctx.original, state, ctx.scaling), **ev, "identical": identical,
            "cached": cached, "train_s": train_s, "steps": steps, "time_s": time.perf_counter() - t}


def auto_workers(n_jobs: int, device: torch.device) -> int:
    """Parallel retraining processes: 1 on CUDA (one GPU, and CUDA cannot be forked) and on small machines,
    where one process already keeps every core busy; else one per 4 cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.type != "cpu" or cores < 8:
        return 1
    return max(1, min(n_jobs, cores // 4))


def unique_retrainings(groups: Sequence[Group]) -> list[tuple[tuple[int, ...], int, bool]]:
    """(removed, seed, full) of each distinct retraining, in first-use order; full if any group needs it."""
    out: dict[tuple, bool] = {}
    for g in groups:
        out[g.retraining] = out.get(g.retraining, False) or (g.kind in FULL_KINDS and g.generate)
    return [(r, s, f) for (r, s), f in out.items()]


def run_retrainings(ctx: Context, jobs: Sequence[tuple[tuple[int, ...], int, bool]], workers: int = 1,
                    progress: Callable[[str], None] | None = None) -> list[dict]:
    """:func:`measure` for every (removed, seed, full) job, in this process (``workers`` <= 1) or in forked worker
    processes that share the already-loaded base model copy-on-write. Results in ``jobs`` order; the model is
    left in the original state. Raises RuntimeError naming the job if any retraining fails."""
    try:
        if workers <= 1 or len(jobs) <= 1:
            out = []
            for i, (removed, seed, full) in enumerate(jobs):
                if progress:
                    progress(f"retraining {i + 1}/{len(jobs)}: {len(removed)} removed, seed {seed}")
                out.append(measure(ctx, removed, seed, full))
            return out
        return _run_forked(ctx, list(jobs), workers, progress)
    finally:
        set_lora_state(ctx.model, ctx.original)


def _run_forked(ctx: Context, jobs: list, workers: int, progress) -> list[dict]:
    import multiprocessing

    if ctx.device.type != "cpu":
        raise RuntimeError("parallel retraining forks the process, which CUDA does not survive; use 1 worker")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // workers)
    fork = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory(prefix="retrain-") as tmp:
        numbered = list(enumerate(jobs))
        procs = [fork.Process(target=_worker, args=(ctx, numbered[w::workers], Path(tmp), threads), daemon=True)
                 for w in range(workers)]
        for p in procs:
            p.start()
        done = 0
        while any(p.is_alive() for p in procs):
            time.sleep(0.5)
            now = len(list(Path(tmp).glob("*.json")))
            if progress and now != done:
                progress(f"retraining: {now}/{len(jobs)} done ({workers} processes)")
            done = now
        results = []
        for i, (removed, seed, _) in numbered:
            path = Path(tmp) / f"{i}.json"
            what = f"retraining without {len(removed)} samples (seed {seed})"
            if not path.exists():
                raise RuntimeError(f"{what} produced no result (worker exit codes {[p.exitcode for p in procs]})")
            r = json.loads(path.read_text(encoding="utf-8"))
            if "error" in r:
                raise RuntimeError(f"{what} failed: {r['error']}")
            results.append(r)
    return results


def _worker(ctx: Context, jobs: list, out: Path, threads: int) -> None:  # pragma: no cover - child
    torch.set_num_threads(threads)
    code = 0
    for i, (removed, seed, full) in jobs:
        try:
            r = measure(ctx, removed, seed, full)
        except Exception as e:  # noqa: BLE001 - reported to the parent, which raises
            r, code = {"error": f"{type(e).__name__}: {e}"}, 1
        tmp = out / f".{i}.json.tmp"
        tmp.write_text(json.dumps(r), encoding="utf-8")
        tmp.rename(out / f"{i}.json")
    os._exit(code)
