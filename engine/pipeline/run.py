"""Run a spec end to end into a run folder (format: :mod:`engine.runfolder.runformat`): orchestration only.

:func:`run_pipeline` reads as the list of stages (their functions: :mod:`engine.pipeline.stages` and the stage
packages)::

    _prepare                 data, methods, feature plan, model + adapter, feature cache: all checked before
                             anything is written
    _adapter_stage           fine-tune (a state per epoch) or load the user's states; samples, losses, checkpoints
    _score_checkpoints       for every checkpoint the feature plan needs (engine.features.plan): this process's
                             missing feature shards into the cache, every method shard by shard
                             (score_checkpoint), metrics and agreement from the stored scores (Evaluation)
    _self_influence          s(z_i, z_i) at the last scored checkpoint (plan-gated)
    _spread_retrainings      torchrun only: every rank's share of the retraining bank
    _finish                  tables, numerical self-checks, the analyses (engine.analysis.stages), manifest,
                             atomic commit

No method name appears here: what is computed follows from the plan. Bad input raises InputError before
anything is written; any failure leaves no visible run folder, and the feature cache keeps the finished shards for
the next try. Under torchrun every rank runs :func:`run_pipeline` (engine.features.distributed): ranks split the
shards, rank 0 fine-tunes and commits; the torchrun-only steps are functions of their own
(:func:`_whole_training_set`, :func:`_spread_retrainings`, :func:`_all_rank_shards`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.analysis.convergence import score_drift
from engine.analysis.stages import StageInputs, run_stages, spread_retrainings
from engine.catalog.methods import changed_params, method_info
from engine.data.encoding import EncodedData
from engine.data.tasks.base import TaskData
from engine.data.tasks.difficulty import sample_text
from engine.errors import InputError
from engine.evaluation import checks, metrics
from engine.evaluation.checks import finite_rows
from engine.evaluation.tables import Evaluation, ScoreMatrices, loss_table, samples_table, scores_table
from engine.features.cache import FeatureCache, TensorLRU
from engine.features.distributed import Dist
from engine.features.plan import FeaturePlan
from engine.features.stage import (
    CheckpointData,
    PassSettings,
    all_train_shards,
    ensure_features,
    load_checkpoint,
    materialize,
    method_features,
    shard_count,
)
from engine.model.adapters import adapter_digest
from engine.model.finetune import set_lora_state
from engine.model.states import AdapterStates, LoadedModel, load_model, write_checkpoints
from engine.pipeline.fingerprint import fingerprint
from engine.pipeline.memory import MemoryProbe, release_freed_memory
from engine.pipeline.stages import (
    cached_adapter_states,
    encode_data,
    feature_plan,
    grad_batch_size,
    load_data,
    open_cache,
    pass_settings,
    releases_early,
    run_methods,
    say,
    tensor_lru,
)
from engine.runfolder.runformat import INDEX_DIR, SCORES_DIR, scores_file, table
from engine.runfolder.writer import RunWriter, open_run
from engine.scoring.methods import get_method, release_statistics, score_in_shards
from engine.scoring.methods.base import ScoringMethod
from engine.scoring.query_index import index_body, index_checkpoints, write_index
from engine.scoring.self_influence import self_influence
from engine.spec.run_spec import RunSpec

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- the run


def run_pipeline(spec: RunSpec, runs_dir: Path, progress: bool = True, dist: Dist | None = None) -> Path | None:
    """Run ``spec`` into ``runs_dir/<spec.run_name>``; return the committed folder (None on torchrun ranks > 0).

    Bad input raises InputError before anything is written; any failure leaves no visible run folder. Features
    go through the feature cache, so a run started again after a crash reuses the shards it finished.
    ``dist``: this process's place in a torchrun job (default: one process).
    """
    t0 = time.perf_counter()
    dist = dist or Dist()
    probe = MemoryProbe()
    with probe.stage("load"):
        run = _prepare(spec, Path(runs_dir), progress, dist, probe)
    probe.cuda = run.lm.device.type == "cuda"  # GPU peaks from here on; a CPU run never initialises CUDA for them
    owner = run.dist.broadcast_int(os.getpid())  # rank 0 owns the run folder; the others write into it
    if run.dist.main:  # another run with the same features must not delete the cache under this one
        run.cache.lease()
    try:
        with open_run(runs_dir, spec.run_name, owner_pid=owner) as writer:
            states = _adapter_stage(run, writer)
            scored = _score_checkpoints(run, writer, states)
            self_rows = _self_influence(run, scored)
            _spread_retrainings(run, writer, states, scored)
            if not run.dist.main:
                run.dist.barrier()  # rank 0 commits
                return None
            folder = _finish(run, writer, states, scored, self_rows, t0)
        run.dist.barrier()
    finally:
        if run.dist.main:
            run.cache.release()
    if spec.scoring.feature_cache == "delete":
        run.cache.remove()
    return folder


@dataclass
class Run:
    """What the stages of one run share: its inputs, checked (:func:`_prepare`), and what they add to the manifest
    (``timings`` in seconds per stage, ``notes`` = the manifest's warnings)."""

    spec: RunSpec
    runs_dir: Path
    progress: bool
    dist: Dist
    task: TaskData
    methods: list[ScoringMethod]
    plan: FeaturePlan
    lm: LoadedModel
    data: EncodedData
    k: int
    settings: PassSettings
    cache: FeatureCache
    lru: TensorLRU
    texts: tuple[tuple[str, ...], tuple[str, ...]] | None
    memory: MemoryProbe  # peak memory per stage, for the manifest
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Scored:
    """What scoring the checkpoints leaves for the later stages: the metrics so far (``ev``), the features at the
    last scored checkpoint (``now``) and at every checkpoint before it that the plan keeps (``history``), its score
    matrices (``matrices``, rank 0 only), the convergence analysis' ``drift`` rows, the checks' ``finite`` rows and
    the feature shards computed and reused over every rank."""

    scored: list[int]
    ev: Evaluation
    now: CheckpointData
    history: list[CheckpointData]
    matrices: ScoreMatrices | None
    drift: list[dict]
    finite: list
    shards: dict[str, int]


def _prepare(spec: RunSpec, runs_dir: Path, progress: bool, dist: Dist, memory: MemoryProbe) -> Run:
    """Data, methods, plan, model and cache, each checked before the run folder is opened."""
    task = load_data(spec)
    methods = run_methods(spec)
    plan = feature_plan(spec, methods)
    n_shards = shard_count(len(task.train), spec.scoring.shard_size)
    if n_shards < dist.world_size:
        raise InputError(f"{n_shards} training shard(s) of spec field 'scoring.shard_size' = {spec.scoring.shard_size} "
                         f"for {dist.world_size} processes: use smaller shards or fewer processes")
    lm = load_model(spec, dist.device)
    data = encode_data(task, lm.tok, spec.train)
    texts = (tuple(sample_text(s.prompt, s.response) for s in task.train),
             tuple(sample_text(s.prompt, s.response) for s in task.test)) if plan.text else None
    return Run(spec, runs_dir, progress, dist, task, methods, plan, lm, data,
               k=spec.scoring.k or metrics.default_k(data.train_labels), settings=pass_settings(spec, lm, progress),
               cache=open_cache(spec, task, lm, runs_dir), lru=tensor_lru(spec),
               texts=texts, memory=memory, notes=list(lm.user.warnings) if lm.user is not None else [])


def _adapter_stage(run: Run, writer: RunWriter) -> AdapterStates:
    """The adapter states (fine-tuned, or the user's); rank 0 writes the samples, the losses and the checkpoints."""
    t = time.perf_counter()
    with run.memory.stage("finetune"):
        states = cached_adapter_states(run.spec, run.lm, run.data, run.cache, run.dist, run.progress)
    run.timings["finetune_s"] = time.perf_counter() - t
    if run.dist.main:
        writer.write_table("samples.parquet", samples_table(run.task))
        writer.write_table("train_loss.parquet", loss_table(states.losses))
        write_checkpoints(writer, states, run.lm)
    run.dist.barrier()  # the temp folder exists before any rank writes into it
    return states


def _score_checkpoints(run: Run, writer: RunWriter, states: AdapterStates) -> Scored:
    """Features at every checkpoint the plan needs; at the scored ones, every method's scores, then (rank 0) the
    metrics, the finite-share checks and the convergence analysis' drift."""
    spec, plan, dist, timings = run.spec, run.plan, run.dist, run.timings
    scored = states.scored(spec.scoring.checkpoints)
    needed = plan.checkpoints(scored)
    if plan.history and needed != scored:
        run.notes.append(f"history: gradients taken at checkpoints {needed[0]}..{needed[-1]} for the methods that "
                         f"sum over checkpoints (TracIn); scores written at {', '.join(map(str, scored))}")
    ev = Evaluation(run.data.train_labels, run.data.test_labels, run.k,
                    workdir=str(run.cache.folder))  # scratch: by the features
    timings["features_s"] = timings["scoring_s"] = timings["metrics_s"] = 0.0
    out = Scored(scored, ev, None, [], None, [], [], {"computed": 0, "reused": 0})
    n_train, n_test = len(run.task.train), len(run.task.test)
    for c in needed:
        set_lora_state(run.lm.model, states.states[c - 1])
        run.lm.model.eval()
        t = time.perf_counter()
        with run.memory.stage("features"):
            done, kept = ensure_features(run.cache, c, run.lm.model, run.data.train, run.data.test, run.settings,
                                         plan, dist, c in scored, after_shard=release_freed_memory)
            out.shards["computed"] += done
            out.shards["reused"] += kept
            out.now = load_checkpoint(run.cache, c, states.weights[c - 1], n_train, n_test, run.settings, plan, dist,
                                      run.lru, c in scored, run.texts)
        timings["features_s"] += time.perf_counter() - t
        if plan.history:
            out.history.append(out.now)
        if c not in scored:
            continue
        t = time.perf_counter()
        run.notes.extend(score_checkpoint(writer, run.methods, out.now, out.history, spec.scoring.shard_size,
                                          timings, run.memory, release_early=releases_early(spec)))
        timings["scoring_s"] += time.perf_counter() - t
        dist.barrier()  # every rank's score files are written
        if dist.main:
            with run.memory.stage("metrics"):
                _evaluate(run, writer, c, out)
    out.shards = _all_rank_shards(dist, out.shards)
    return out


def _evaluate(run: Run, writer: RunWriter, c: int, out: Scored) -> None:
    """Rank 0, at scored checkpoint ``c``: metrics and agreement, the finite-share rows, the score drift since the
    previous scored checkpoint; keeps ``c``'s matrices in ``out.matrices``."""
    t = time.perf_counter()
    matrices = ScoreMatrices(writer.tmp, c, [m.name for m in run.methods], len(run.task.test), len(run.task.train),
                             run.lru.budget)
    for name in matrices:
        out.ev.add(name, c, matrices[name])
    out.ev.add_agreement(c)
    if run.spec.checks.enabled:
        out.finite += finite_rows(matrices, c)
    if "convergence" in run.spec.analysis.stages and out.matrices is not None:
        out.drift += [score_drift(name, c, out.matrices[name], matrices[name]) for name in matrices]
    out.matrices = matrices
    run.timings["metrics_s"] += time.perf_counter() - t


def _all_rank_shards(dist: Dist, shards: dict[str, int]) -> dict[str, int]:
    """Feature shards computed and reused, summed over every rank (torchrun); this process's own otherwise."""
    counts = dist.comm.reduce(torch.tensor([shards["computed"], shards["reused"]], dtype=torch.long))
    return {"computed": int(counts[0]), "reused": int(counts[1])}


def _self_influence(run: Run, s: Scored) -> list[dict] | None:
    """Rank 0: the self-influence rows at the last scored checkpoint, when the plan asks for them."""
    if not (run.plan.self_influence and run.dist.main):
        return None
    t = time.perf_counter()
    with run.memory.stage("self_influence"):
        now, history = _whole_training_set(run.cache, s.now, s.history, run.plan, run.lru, run.dist,
                                           run.spec.scoring.shard_size)
        rows = self_influence_stage(now, history, run.methods)
    run.timings["self_influence_s"] = time.perf_counter() - t
    return rows


def _spread_retrainings(run: Run, writer: RunWriter, states: AdapterStates, s: Scored) -> None:
    """Torchrun only, when the run retrains: every process takes its share of the retrainings into the bank;
    rank 0 finds them there when the analysis runs."""
    if run.dist.world_size == 1 or "retrain" not in run.spec.analysis.stages:
        return
    matrices = s.matrices if run.dist.main else ScoreMatrices(
        writer.tmp, s.now.checkpoint, [m.name for m in run.methods], len(run.task.test), len(run.task.train),
        run.lru.budget)
    t = time.perf_counter()
    spread_retrainings(_stage_inputs(run, states, s.now, None, matrices, s.drift), run.dist.rank,
                       run.dist.world_size, say(run.progress))
    run.dist.barrier()
    run.timings["retrain_spread_s"] = time.perf_counter() - t


def _finish(run: Run, writer: RunWriter, states: AdapterStates, s: Scored, self_rows: list[dict] | None,
            t0: float) -> Path:
    """Rank 0: the remaining tables, the self-checks, the analyses, then the manifest and the atomic commit."""
    spec, timings = run.spec, run.timings
    if self_rows is not None:
        writer.write_table("self_influence.parquet", table("self_influence", self_rows))
    with run.memory.stage("metrics"):
        s.ev.write(writer)
    if not spec.scoring.query_index:  # the index saves them; nothing else after this point needs them kept
        release_statistics(s.now.train)
    with run.memory.stage("checks"):
        extra = checks_stage(writer, spec, run.lm, run.data, states, s.now.checkpoint, s.finite, timings, run.notes)
    if spec.analysis.stages:
        train_grads = None
        if run.plan.grads and "ihvp" in spec.analysis.stages:  # the study reads every training gradient
            every = s.now.train if run.dist.world_size == 1 else all_train_shards(
                run.cache, s.now.checkpoint, len(run.task.train), spec.scoring.shard_size, run.plan, run.lru)
            train_grads = materialize(every)
        previous = ScoreMatrices(writer.tmp, s.scored[-2], [m.name for m in run.methods], len(run.task.test),
                                 len(run.task.train), run.lru.budget) if len(s.scored) > 1 else None
        inputs = _stage_inputs(run, states, s.now, train_grads, s.matrices, s.drift, history=s.history,
                               previous=previous)
        if "stability" in spec.analysis.stages and run.dist.world_size > 1:
            # rank 0 re-scores alone: its training side must hold every shard (a preconditioned method's statistics
            # would otherwise wait for the other processes, which are not scoring any more)
            now, history = _whole_training_set(run.cache, s.now, s.history, run.plan, run.lru, run.dist,
                                               spec.scoring.shard_size)
            inputs = dataclasses.replace(inputs, features=now, history=history)
        with run.memory.stage("analyses"):
            timings.update(run_stages(inputs, writer.write_table, say(run.progress)))
    writer.adopt(SCORES_DIR)  # the other ranks' score files
    if spec.scoring.query_index:
        with run.memory.stage("index"):
            extra["query_index"] = _index_stage(run, writer, states, s)
    timings["total_s"] = time.perf_counter() - t0
    return writer.commit({**_manifest(spec, run.task, run.methods, run.plan, states, s.scored, run.k, run.lm,
                                      timings, run.notes, run.dist, s.shards),
                          "peak_memory_mb": run.memory.peaks(), **extra})


def _index_stage(run: Run, writer: RunWriter, states: AdapterStates, s: Scored) -> dict:
    """Rank 0: the query index (engine.scoring.query_index) from the feature cache and the statistics the methods
    computed while scoring the last checkpoint; returns its summary for the manifest."""
    t = time.perf_counter()
    checkpoints = index_checkpoints(run.plan, s.now.checkpoint)
    sides = {c.checkpoint: c.test for c in s.history} | {s.now.checkpoint: s.now.test}
    body = write_index(writer.tmp / INDEX_DIR, run.cache, checkpoints,
                       shard_count(len(run.task.train), run.spec.scoring.shard_size), sides, run.plan,
                       s.now.train.memo, index_body(run.spec, [m.name for m in run.methods], len(run.task.train),
                                                    len(run.task.test), states))
    run.timings["index_s"] = time.perf_counter() - t
    return {k: body[k] for k in ("size_bytes", "checkpoints", "methods")}


# ---------------------------------------------------------------------------------------------- stages


def score_checkpoint(writer: RunWriter, methods: list[ScoringMethod], now: CheckpointData,
                     history: list[CheckpointData], shard_size: int, seconds: dict[str, float],
                     memory: MemoryProbe | None = None, release_early: bool = False) -> list[str]:
    """Score every method at ``now`` over this process's training shards, writing one score file per (method,
    shard) as it goes; adds each method's time to ``seconds[score_<name>_s]`` (and its peak memory to ``memory``,
    stage ``score_<name>``); returns one warning line per method that warned. ``release_early``: before each
    method, free the statistics no method from it on keeps (:func:`releases_early`)."""
    c = now.checkpoint
    notes = []
    for i, m in enumerate(methods):
        if release_early:
            release_statistics(now.train, unless_kept_by=[get_method(x.name) for x in methods[i:]])
        t = time.perf_counter()
        train_x, test_x = method_features(m.proj_key, now, history)
        with memory.stage(f"score_{m.name}") if memory else nullcontext(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            for start, stop, S_block in score_in_shards(m.name, train_x, test_x, p=m.params):
                writer.write_table(scores_file(m.name, c, start // shard_size),
                                   scores_table(m.name, c, np.asarray(S_block), start))
        if caught:  # e.g. LiSSA blocks that hit max_iter: one line per method, kept in the manifest
            notes.append(f"{m.name} @ checkpoint {c}: {len(caught)} warning(s), first: {caught[0].message}")
            log.warning(notes[-1])
        seconds[f"score_{m.name}_s"] = seconds.get(f"score_{m.name}_s", 0.0) + time.perf_counter() - t
    if release_early:  # the last method's too: nothing after scoring reads them
        release_statistics(now.train, unless_kept_by=[])
    return notes


def self_influence_stage(now: CheckpointData, history: list[CheckpointData],
                         methods: list[ScoringMethod]) -> list[dict]:
    """``self_influence`` rows (method, checkpoint, train_id, score) at checkpoint ``now`` for every method whose
    self-influence means something (the catalog's rule); the queries are the training samples themselves.
    ``now``/``history`` must hold every training shard in this process (see :func:`_whole_training_set`)."""
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
    """The numerical self-checks (``spec.checks``, :mod:`engine.evaluation.checks`) at the last scored ``checkpoint``: the
    padding check (and, for a bfloat16 run, bfloat16 vs float32) with that adapter state set, plus the ``finite``
    rows collected while scoring; writes ``checks.parquet``, adds the failed checks to ``notes`` and the time to
    ``timings``. Returns the manifest fields it adds."""
    if not spec.checks.enabled:
        return {}
    t = time.perf_counter()
    set_lora_state(lm.model, states.states[checkpoint - 1])
    lm.model.eval()
    rows = checks.padding_rows(lm.model, data.train, lm.tok.pad_token_id, lm.device, checkpoint,
                               spec.checks.samples, spec.dtype)
    if spec.dtype == "bfloat16":
        rows += checks.bf16_rows(lm.model, data.train, data.test, lm.tok.pad_token_id, lm.device, checkpoint,
                                 spec.checks.rows, spec.checks.columns, grad_batch_size(spec, lm))
    rows = [r.as_dict() for r in rows + finite]
    writer.write_table("checks.parquet", table("checks", rows))
    failed = [r for r in rows if not r["passed"]]
    notes += [f"self-check failed: {r['kind']} {r['subject']} {r['metric']} = {r['value']:.4g} "
              f"(needs {r['op']} {r['threshold']:.4g})" for r in failed]
    timings["checks_s"] = time.perf_counter() - t
    return {"checks_failed": len(failed)}


def _stage_inputs(run: Run, states: AdapterStates, now: CheckpointData, train_grads, matrices,
                  drift: list, history: list[CheckpointData] | None = None,
                  previous: ScoreMatrices | None = None) -> StageInputs:
    """What the analyses read, at the last scored checkpoint ``now`` (``matrices``: its score matrices; ``history``:
    the checkpoints TracIn sums; ``previous``: the score matrices of the scored checkpoint before it)."""
    spec, lm, task, data, runs_dir = run.spec, run.lm, run.task, run.data, run.runs_dir
    return StageInputs(
        spec=spec, model=lm.model, tok=lm.tok, task=task, train_enc=data.train, test_enc=data.test,
        states=[states.initial, *states.states], scaling=lm.scaling, checkpoint=now.checkpoint,
        train_grads=train_grads, test_grads=now.test.grads, block_names=now.train.block_names,
        matrices={name: matrices[name] for name in matrices}, drift=drift, device=lm.device, kfac=now.train.kfac,
        runs_dir=runs_dir, methods=run.methods, features=now, history=history, previous=previous,
        settings=run.settings, k=run.k)


def _manifest(spec, task, methods, plan, states, scored, k, lm, timings, notes, dist, shards) -> dict:
    return {
        "run": spec.run_name, "kind": "pipeline", "spec": spec.to_dict(), "spec_hash": spec.spec_hash,
        "model": spec.model.name, "adapter": spec.model.adapter,
        "adapter_sha256": adapter_digest(lm.user) if lm.user is not None else None,
        "task": task.name, "methods": [m.name for m in methods],
        "method_params": {m.name: changed_params(m.params) for m in methods if changed_params(m.params)},
        "checkpoints": scored, "checkpoint_info": states.info(), "feature_plan": plan.to_dict(),
        "n_train": len(task.train), "n_test": len(task.test), "labels": task.labels, "k_default": k,
        "device": str(lm.device), "timings": timings, "warnings": notes, "analyses": list(spec.analysis.stages),
        "world_size": dist.world_size, "feature_shards": shards, "fingerprint": fingerprint(spec, methods, lm.model),
        "shard_ranks": {str(i): i % dist.world_size for i in range(shard_count(len(task.train), spec.scoring.shard_size))},
    }
