"""Run a spec end to end into a run folder (format: :mod:`engine.runformat`).

The run is a sequence of stages, each a small function with typed inputs and outputs, so that each can run on
its own (on shards, in other processes)::

    load_data(spec) -> TaskData                          built-in generator or the user's dataset, checked
    load_model(spec) -> LoadedModel                      base model + LoRA: a fresh adapter, or the user's one
    encode_data(task, lm, spec.train) -> EncodedData     token ids and loss masks
    cached_adapter_states(...) -> AdapterStates          fine-tune (a state per epoch) or load the user's states
    for every checkpoint the feature plan needs (engine.plan: the union of what methods and analyses read):
        ensure_features(...)                             this process's missing shards into the feature cache
        load_checkpoint(...) -> CheckpointData           the cached shards as TrainData, the test side in memory
        score_checkpoint(...)                            every method, shard by shard, written as it goes
        Evaluation (engine.tables)                       metrics and agreement from the stored scores
    self_influence_stage(...)                            s(z_i, z_i) at the last scored checkpoint (plan-gated)
    checks_stage(...)                                    numerical self-checks (spec.checks, on by default)
    the analyses (engine.analysis.run_stages) -> commit (manifest, atomic rename)

No method name appears here: what is computed follows from the plan. Bad input raises InputError before
anything is written (data, model and adapter are checked before the run folder is opened); any failure leaves
no visible run folder, and the feature cache keeps the finished shards for the next try. Under torchrun every
rank runs this function (engine.distributed): ranks split the shards, rank 0 fine-tunes and commits.
"""

from __future__ import annotations

import dataclasses

import json
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from engine import metrics
from engine.analysis import StageInputs, run_stages, spread_retrainings
from engine.analysis.convergence import score_drift
from engine.catalog import changed_params, method_info
from engine.checks import finite_rows
from engine.errors import InputError
from engine.distributed import Dist
from engine.feature_cache import FeatureCache, TensorLRU, cache_root, feature_key
from engine.features import (CheckpointData, PassSettings, all_train_shards, ensure_features, load_checkpoint,
                             materialize, method_features)
from engine.finetune import add_lora, finetune, lora_state, set_lora_state
from engine.formatting import Encoded, encode
from engine.methods import get_method, score_in_shards
from engine.models import load_base, resolve_device
from engine.plan import FeaturePlan, plan_for
from engine.runfolder import RunWriter, open_run
from engine.runformat import CHECKPOINTS_DIR, SCORES_DIR, scores_file, table
from engine.spec import RunSpec, TaskSpec, TrainSpec
from engine.tables import Evaluation, ScoreMatrices, loss_table, samples_table, scores_table
from engine.tasks.base import TaskData
from engine.tasks.difficulty import sample_text

log = logging.getLogger(__name__)

# kept importable from here for callers of the old module layout
__all__ = ["run_pipeline", "load_task", "check_task", "samples_table", "scores_table", "loss_table", "Evaluation"]


# ---------------------------------------------------------------------------------------------- data


def load_task(task: TaskSpec) -> TaskData:
    """Built-in generator or an imported dataset, as the spec says."""
    from engine.tasks import build_task, load_dataset

    if task.name == "file":
        return load_dataset(task.path)
    return build_task(task.name, seed=task.seed, n_train_per_label=task.n_train_per_label,
                      n_test_per_label=task.n_test_per_label)


def check_task(task: TaskData) -> None:
    """Refuse data that attribution cannot be judged on (empty split, test labels unseen in train)."""
    if not task.train or not task.test:
        raise InputError(f"dataset {task.name!r}: the {'train' if not task.train else 'test'} split is empty")
    unseen = sorted({s.label for s in task.test} - {s.label for s in task.train})
    if unseen:
        raise InputError(f"dataset {task.name!r}: labels only in test: {', '.join(unseen)}")


def load_data(spec: RunSpec) -> TaskData:
    task = load_task(spec.task)
    check_task(task)
    return task


@dataclass(frozen=True)
class EncodedData:
    """Token ids and loss masks of every sample, and the labels."""

    train: list[Encoded]
    test: list[Encoded]
    train_labels: list[str]
    test_labels: list[str]


def encode_data(task: TaskData, lm: LoadedModel, train: TrainSpec) -> EncodedData:
    def enc(s):
        return encode(s, lm.tok, train.template, train.max_length, train.loss_on, train.preprocessing)

    return EncodedData([enc(s) for s in task.train], [enc(s) for s in task.test],
                       [s.label for s in task.train], [s.label for s in task.test])


# ---------------------------------------------------------------------------------------------- model


@dataclass
class LoadedModel:
    """The peft model on its device, its tokenizer, and (for a given adapter) what was found on disk.

    user: the user's adapter (``engine.adapters.UserAdapter``) or None; user_states: its states' tensors in
    training order, already checked against the model.
    """

    model: object
    tok: object
    device: torch.device
    user: object = None
    user_states: list = field(default_factory=list)

    @property
    def scaling(self) -> float:
        """peft's LoRA scaling of the first adapted module (alpha / r, or alpha / sqrt(r) with rsLoRA): the merged
        update is ``scaling * B @ A``."""
        for mod in self.model.modules():
            scaling = getattr(mod, "scaling", None)
            if isinstance(scaling, dict) and "default" in scaling:
                return float(scaling["default"])
        cfg = self.model.peft_config["default"]
        return float(cfg.lora_alpha) / float(cfg.r)


def load_model(spec: RunSpec, dist: Dist | None = None) -> LoadedModel:
    """The base model with a LoRA adapter: a fresh one (``spec.lora``, initialised from ``train.seed``) or, with
    ``model.adapter``, the user's (checked before anything else happens; see ``engine.adapters``)."""
    from engine import adapters

    device = dist.device if dist is not None and dist.device is not None else resolve_device(spec.device)
    dtype = torch.bfloat16 if spec.dtype == "bfloat16" else torch.float32
    user = adapters.find_adapter(spec.model.adapter, spec.model.checkpoints) if spec.model.adapter else None
    if user is not None:
        adapters.check_base_name(user, spec.model.name)
    model, tok = load_base(spec.model.name, trust_remote_code=spec.model.trust_remote_code, dtype=dtype)
    if user is None:
        return LoadedModel(add_lora(model, spec.lora, seed=spec.train.seed).to(device), tok, device)
    states = adapters.check_shapes(user, model)
    model = adapters.attach(model, user, seed=spec.train.seed).to(device)
    return LoadedModel(model, tok, device, user, states)


# ---------------------------------------------------------------------------------------------- adapter states


@dataclass
class AdapterStates:
    """The adapter's states in training order: checkpoint c (1-based) is ``states[c - 1]``.

    initial: checkpoint 0, the LoRA initialisation (B = 0, so the model computes the base model's outputs);
    weights: TracIn's learning-rate weight per checkpoint; sources: where each state came from (``epoch-<e>`` of
    our fine-tuning, or the user's folder); steps: training step at each checkpoint (None if unknown);
    losses: fine-tuning loss rows (epoch, step, loss), empty for a given adapter.
    """

    initial: dict[str, torch.Tensor]
    states: list[dict[str, torch.Tensor]]
    weights: list[float]
    sources: list[str]
    steps: list[int | None]
    losses: list[tuple[int, int, float]] = field(default_factory=list)

    def scored(self, which: str) -> list[int]:
        """The checkpoints ``scoring.checkpoints`` names: "all" -> 1..C, "last" -> [C]."""
        n = len(self.states)
        return list(range(1, n + 1)) if which == "all" else [n]

    def info(self) -> list[dict]:
        """Per checkpoint: index, source, step, TracIn weight (for the manifest)."""
        return [{"checkpoint": c, "source": src, "step": st, "lr_weight": w}
                for c, (src, st, w) in enumerate(zip(self.sources, self.steps, self.weights), start=1)]


def adapter_states(spec: RunSpec, lm: LoadedModel, data: EncodedData, progress: bool) -> AdapterStates:
    """Fine-tune a fresh adapter (a state per epoch), or take the user's states as they are."""
    if lm.user is None:
        torch.manual_seed(spec.train.seed)
        result = finetune(lm.model, data.train, lm.tok.pad_token_id, spec.train, lm.device, progress=progress)
        steps_per_epoch = -(-len(data.train) // spec.train.batch_size)
        n = len(result.epochs)
        return AdapterStates(result.initial, result.epochs, [result.epoch_lr(c) for c in range(1, n + 1)],
                             [f"epoch-{e}" for e in range(1, n + 1)], [e * steps_per_epoch for e in range(1, n + 1)],
                             result.losses)
    initial = lora_state(lm.model)  # the seeded peft initialisation: B = 0
    return AdapterStates(initial, list(lm.user_states), [a.lr for a in lm.user.states],
                         [str(a.path) for a in lm.user.states], [a.step for a in lm.user.states])


def write_checkpoints(writer: RunWriter, states: AdapterStates, lm: LoadedModel) -> None:
    """Every state as a peft adapter folder ``checkpoints/epoch-<c>/`` (c = 0 is the initialisation; for a given
    adapter, c counts its checkpoints), so the run folder is self-contained."""
    adapter_cfg = json.dumps(lm.model.peft_config["default"].to_dict(), default=list, indent=1)
    for c, state in enumerate([states.initial, *states.states]):
        folder = writer.path(f"{CHECKPOINTS_DIR}/epoch-{c}")
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "adapter_model.safetensors"))
        (folder / "adapter_config.json").write_text(adapter_cfg, encoding="utf-8")


# ---------------------------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class ScoringMethod:
    """A method of this run with its parameter object."""

    name: str
    params: object

    @property
    def proj_key(self):
        """The projection (proj_dim, proj_seed, proj_kind) it reads, or None."""
        if "proj" not in method_info(self.name).reads:
            return None
        p = self.params
        return (p.proj_dim, p.proj_seed, p.proj_kind)


def score_checkpoint(writer: RunWriter, methods: list[ScoringMethod], now: CheckpointData,
                     history: list[CheckpointData], shard_size: int, seconds: dict[str, float]) -> list[str]:
    """Score every method at ``now`` over this process's training shards, writing one score file per (method,
    shard) as it goes; adds each method's time to ``seconds[score_<name>_s]``; returns one warning line per
    method that warned."""
    c = now.checkpoint
    notes = []
    for m in methods:
        t = time.perf_counter()
        train_x, test_x = method_features(m.proj_key, now, history)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            for start, stop, S_block in score_in_shards(m.name, train_x, test_x, p=m.params):
                writer.write_table(scores_file(m.name, c, start // shard_size),
                                   scores_table(m.name, c, np.asarray(S_block), start))
        if caught:  # e.g. LiSSA blocks that hit max_iter: one line per method, kept in the manifest
            notes.append(f"{m.name} @ checkpoint {c}: {len(caught)} warning(s), first: {caught[0].message}")
            log.warning(notes[-1])
        seconds[f"score_{m.name}_s"] = seconds.get(f"score_{m.name}_s", 0.0) + time.perf_counter() - t
    return notes


def self_influence_stage(now: CheckpointData, history: list[CheckpointData],
                         methods: list[ScoringMethod]) -> list[dict]:
    """``self_influence`` rows (method, checkpoint, train_id, score) at checkpoint ``now`` for every method whose
    self-influence means something (the catalog's rule); the queries are the training samples themselves.
    ``now``/``history`` must hold every training shard in this process (see :func:`_whole_training_set`)."""
    from engine.self_influence import self_influence

    rows = []
    for m in methods:
        if not method_info(m.name).has_self_influence:
            continue
        train_x, _ = method_features(m.proj_key, now, history)
        diag = self_influence(m.name, m.params, train_x, m.proj_key)
        rows += [{"method": m.name, "checkpoint": now.checkpoint, "train_id": i, "score": float(v)}
                 for i, v in enumerate(diag.tolist())]
    return rows


def _whole_training_set(cache: FeatureCache, now: CheckpointData, history: list[CheckpointData], plan: FeaturePlan,
                        lru: TensorLRU, dist: Dist, shard_size: int) -> tuple[CheckpointData, list[CheckpointData]]:
    """``now`` and ``history`` with every cached training shard in this process, whichever rank computed it. Under
    torchrun the query phase of a preconditioned method sums over the processes for ONE set of queries, which
    all of them share; the training samples as queries differ per process, so rank 0 takes them all alone."""
    if dist.world_size == 1:
        return now, history
    def whole(c: CheckpointData, p: FeaturePlan) -> CheckpointData:
        return dataclasses.replace(c, train=all_train_shards(cache, c.checkpoint, now.train.n, shard_size, p, lru))

    return whole(now, plan), [whole(c, plan if c.checkpoint == now.checkpoint else FeaturePlan(grads=True))
                              for c in history]


def checks_stage(writer: RunWriter, spec: RunSpec, lm: LoadedModel, data: EncodedData, states: AdapterStates,
                 checkpoint: int, finite: list, timings: dict, notes: list) -> dict:
    """The numerical self-checks (``spec.checks``, :mod:`engine.checks`) at the last scored ``checkpoint``: the
    padding check (and, for a bfloat16 run, bfloat16 vs float32) with that adapter state set, plus the ``finite``
    rows collected while scoring; writes ``checks.parquet``, adds the failed checks to ``notes`` and the time to
    ``timings``. Returns the manifest fields it adds."""
    if not spec.checks.enabled:
        return {}
    from engine import checks

    t = time.perf_counter()
    set_lora_state(lm.model, states.states[checkpoint - 1])
    lm.model.eval()
    rows = checks.padding_rows(lm.model, data.train, lm.tok.pad_token_id, lm.device, checkpoint,
                               spec.checks.samples, spec.dtype)
    if spec.dtype == "bfloat16":
        rows += checks.bf16_rows(lm.model, data.train, data.test, lm.tok.pad_token_id, lm.device, checkpoint,
                                 spec.checks.rows, spec.checks.columns, spec.scoring.grad_batch_size)
    rows = [r.as_dict() for r in rows + finite]
    writer.write_table("checks.parquet", table("checks", rows))
    failed = [r for r in rows if not r["passed"]]
    notes += [f"self-check failed: {r['kind']} {r['subject']} {r['metric']} = {r['value']:.4g} "
              f"(needs {r['op']} {r['threshold']:.4g})" for r in failed]
    timings["checks_s"] = time.perf_counter() - t
    return {"checks_failed": len(failed)}


def run_methods(spec: RunSpec) -> list[ScoringMethod]:
    """The spec's methods with their parameter objects (checked, so a bad value fails before any work)."""
    for name in spec.scoring.methods:
        get_method(name)  # the implementation exists
    return [ScoringMethod(name, spec.scoring.method_params(name)) for name in spec.scoring.methods]


def feature_plan(spec: RunSpec, methods: list[ScoringMethod]) -> FeaturePlan:
    return plan_for({m.name: m.params for m in methods}, spec.analysis.stages, spec.scoring.self_influence)


# ---------------------------------------------------------------------------------------------- the run


def _say(progress: bool):
    """Stage messages: to stderr when showing progress, else to the log."""
    if progress:
        return lambda msg: print(msg, file=sys.stderr, flush=True)
    return log.info


def run_pipeline(spec: RunSpec, runs_dir: Path, progress: bool = True, dist: Dist | None = None) -> Path | None:
    """Run ``spec`` into ``runs_dir/<spec.run_name>``; return the committed folder (None on torchrun ranks > 0).

    Bad input raises InputError before anything is written; any failure leaves no visible run folder. Features
    go through the feature cache, so a run started again after a crash reuses the shards it finished.
    ``dist``: this process's place in a torchrun job (default: one process).
    """
    t0 = time.perf_counter()
    dist = dist or Dist()
    task = load_data(spec)
    methods = run_methods(spec)
    plan = feature_plan(spec, methods)
    n_shards = -(-len(task.train) // spec.scoring.shard_size)
    if n_shards < dist.world_size:
        raise InputError(f"{n_shards} training shard(s) of spec field 'scoring.shard_size' = {spec.scoring.shard_size} "
                         f"for {dist.world_size} processes: use smaller shards or fewer processes")
    lm = load_model(spec, dist)
    data = encode_data(task, lm, spec.train)
    k = spec.scoring.k or metrics.paper_k(data.train_labels)
    timings: dict[str, float] = {}
    notes: list[str] = list(lm.user.warnings) if lm.user is not None else []
    run = PassSettings(lm.device, lm.tok.pad_token_id, spec.scoring.grad_batch_size, spec.scoring.shard_size,
                       progress)
    cache = open_cache(spec, task, lm, runs_dir)
    lru = TensorLRU(spec.scoring.feature_memory_mb << 20)
    owner = dist.broadcast_int(os.getpid())  # rank 0 owns the run folder; the others write into it
    texts = (tuple(sample_text(s.prompt, s.response) for s in task.train),
             tuple(sample_text(s.prompt, s.response) for s in task.test)) if plan.text else None

    with open_run(runs_dir, spec.run_name, owner_pid=owner) as writer:
        t = time.perf_counter()
        states = cached_adapter_states(spec, lm, data, cache, dist, progress)
        timings["finetune_s"] = time.perf_counter() - t
        if dist.main:
            writer.write_table("samples.parquet", samples_table(task))
            writer.write_table("train_loss.parquet", loss_table(states.losses))
            write_checkpoints(writer, states, lm)
        dist.barrier()  # the temp folder exists before any rank writes into it

        scored = states.scored(spec.scoring.checkpoints)
        needed = plan.checkpoints(scored)
        if plan.history and needed != scored:
            notes.append(f"history: gradients taken at checkpoints {needed[0]}..{needed[-1]} for the methods that "
                         f"sum over checkpoints (TracIn); scores written at {', '.join(map(str, scored))}")
        ev = Evaluation(data.train_labels, data.test_labels, k, workdir=str(cache.folder))  # scratch: by the features
        timings["features_s"] = timings["scoring_s"] = timings["metrics_s"] = 0.0
        shards = {"computed": 0, "reused": 0}
        drift: list[dict] = []  # score_drift rows (convergence analysis)
        history: list[CheckpointData] = []
        prev = now = None
        finite: list = []  # the checks' finite-share rows, collected while scoring
        for c in needed:
            set_lora_state(lm.model, states.states[c - 1])
            lm.model.eval()
            t = time.perf_counter()
            done, kept = ensure_features(cache, c, lm.model, data.train, data.test, run, plan, dist, c in scored)
            shards["computed"] += done
            shards["reused"] += kept
            now = load_checkpoint(cache, c, states.weights[c - 1], len(task.train), len(task.test), run, plan, dist,
                                  lru, c in scored, texts)
            timings["features_s"] += time.perf_counter() - t
            if plan.history:
                history.append(now)
            if c not in scored:
                continue
            t = time.perf_counter()
            notes += score_checkpoint(writer, methods, now, history, spec.scoring.shard_size, timings)
            timings["scoring_s"] += time.perf_counter() - t
            dist.barrier()  # every rank's score files are written
            if dist.main:
                t = time.perf_counter()
                matrices = ScoreMatrices(writer.tmp, c, [m.name for m in methods], len(task.test), len(task.train),
                                         lru.budget)
                for name in matrices:
                    ev.add(name, c, matrices[name])
                ev.add_agreement(c)
                if spec.checks.enabled:
                    finite += finite_rows(matrices, c)
                if "convergence" in spec.analysis.stages and prev is not None:
                    drift += [score_drift(name, c, prev[name], matrices[name]) for name in matrices]
                prev = matrices
                timings["metrics_s"] += time.perf_counter() - t
        counts = dist.comm.reduce(torch.tensor([shards["computed"], shards["reused"]], dtype=torch.long))
        shards = {"computed": int(counts[0]), "reused": int(counts[1])}  # over every rank
        self_rows = None
        if plan.self_influence and dist.main:
            t = time.perf_counter()
            self_rows = self_influence_stage(*_whole_training_set(cache, now, history, plan, lru, dist,
                                                                  spec.scoring.shard_size), methods)
            timings["self_influence_s"] = time.perf_counter() - t
        if dist.world_size > 1 and "retrain" in spec.analysis.stages:  # every process takes its share of the
            matrices = prev if dist.main else ScoreMatrices(  # retrainings into the bank; rank 0 finds them there
                writer.tmp, now.checkpoint, [m.name for m in methods], len(task.test), len(task.train), lru.budget)
            t_spread = time.perf_counter()
            spread_retrainings(_stage_inputs(spec, lm, task, data, states, now, None, matrices, drift, runs_dir),
                               dist.rank, dist.world_size, _say(progress))
            dist.barrier()
            timings["retrain_spread_s"] = time.perf_counter() - t_spread
        if not dist.main:
            dist.barrier()  # rank 0 commits
            return None
        if self_rows is not None:
            writer.write_table("self_influence.parquet", table("self_influence", self_rows))
        ev.write(writer)
        extra = checks_stage(writer, spec, lm, data, states, now.checkpoint, finite, timings, notes)
        if spec.analysis.stages:
            train_grads = None
            if plan.grads and "ihvp" in spec.analysis.stages:  # the study reads every training gradient
                every = now.train if dist.world_size == 1 else all_train_shards(
                    cache, now.checkpoint, len(task.train), spec.scoring.shard_size, plan, lru)
                train_grads = materialize(every)
            timings.update(run_stages(_stage_inputs(spec, lm, task, data, states, now, train_grads, prev, drift,
                                                    runs_dir), writer.write_table, _say(progress)))
        writer.adopt(SCORES_DIR)  # the other ranks' score files
        timings["total_s"] = time.perf_counter() - t0
        folder = writer.commit({**_manifest(spec, task, methods, plan, states, scored, k, lm, timings, notes, dist,
                                            shards), **extra})
    dist.barrier()
    if spec.scoring.feature_cache == "delete":
        cache.remove()
    return folder


def _stage_inputs(spec, lm: LoadedModel, task: TaskData, data: EncodedData, states: AdapterStates,
                  now: CheckpointData, train_grads, matrices, drift: list, runs_dir: Path) -> StageInputs:
    """What the analyses read, at the last scored checkpoint ``now`` (``matrices``: its score matrices)."""
    return StageInputs(
        spec=spec, model=lm.model, tok=lm.tok, task=task, train_enc=data.train, test_enc=data.test,
        states=[states.initial, *states.states], scaling=lm.scaling, checkpoint=now.checkpoint,
        train_grads=train_grads, test_grads=now.test.grads, block_names=now.train.block_names,
        matrices={name: matrices[name] for name in matrices}, drift=drift, device=lm.device, kfac=now.train.kfac,
        runs_dir=runs_dir)


def open_cache(spec: RunSpec, task: TaskData, lm: LoadedModel, runs_dir: Path) -> FeatureCache:
    from engine.adapters import adapter_digest

    key, basis = feature_key(spec, task, adapter_digest(lm.user) if lm.user is not None else None)
    return FeatureCache.open(cache_root(runs_dir), key, basis)


def cached_adapter_states(spec: RunSpec, lm: LoadedModel, data: EncodedData, cache: FeatureCache, dist: Dist,
                          progress: bool) -> AdapterStates:
    """The adapter states: from the cache when a previous try of this run got that far, else fine-tuned (or
    loaded) by rank 0 and cached, while the other ranks wait and then read them."""
    states = cache.load_states() if dist.main else None
    if dist.main and states is None:
        states = adapter_states(spec, lm, data, progress)
        cache.save_states(states)
    dist.barrier()
    return states if states is not None else cache.load_states()


def _manifest(spec, task, methods, plan, states, scored, k, lm, timings, notes, dist, shards) -> dict:
    from engine.adapters import adapter_digest

    return {
        "run": spec.run_name, "kind": "pipeline", "spec": spec.to_dict(), "spec_hash": spec.spec_hash,
        "model": spec.model.name, "adapter": spec.model.adapter,
        "adapter_sha256": adapter_digest(lm.user) if lm.user is not None else None,
        "task": task.name, "methods": [m.name for m in methods],
        "method_params": {m.name: changed_params(m.params) for m in methods if changed_params(m.params)},
        "checkpoints": scored, "checkpoint_info": states.info(), "feature_plan": plan.to_dict(),
        "n_train": len(task.train), "n_test": len(task.test), "labels": task.labels, "k_default": k,
        "device": str(lm.device), "timings": timings, "warnings": notes, "analyses": list(spec.analysis.stages),
        "world_size": dist.world_size, "feature_shards": shards,
        "shard_ranks": {str(i): i % dist.world_size for i in range(-(-len(task.train) // spec.scoring.shard_size))},
    }
