"""Run a spec end to end into a run folder (see ``engine.runfolder`` for the layout).

Stages: data → base model + LoRA → fine-tune (a LoRA state per epoch) → for each scored checkpoint:
per-sample gradients and representations of train and test samples → every method's score matrix, written
per shard of the training set → metrics, per-label metrics and method agreement → the analysis stages the
spec asks for (``engine.analysis``: iHVP error, convergence, retraining) → manifest (atomic commit).
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import save_file

from engine import metrics
from engine.analysis import StageInputs, run_stages
from engine.analysis.convergence import score_drift
from engine.errors import InputError
from engine.finetune import add_lora, finetune, set_lora_state
from engine.formatting import encode
from engine.grads import SampleFeatures, features_in_shards, sample_features
from engine.methods import get_method, score_in_shards
from engine.methods.base import Features
from engine.models import load_base, resolve_device
from engine.projection import DEFAULT_KIND, Projector, features_in_shards_projected
from engine.rep_grads import rept_features
from engine.runfolder import open_run
from engine.spec import RunSpec, TaskSpec
from engine.tasks.base import TaskData

log = logging.getLogger(__name__)


def load_task(task: TaskSpec) -> TaskData:
    """Built-in generator or an imported dataset, as the spec says."""
    from engine.tasks import build_task, load_dataset

    if task.name == "file":
        return load_dataset(task.path)
    return build_task(task.name, seed=task.seed, n_train_per_label=task.n_train_per_label,
                      n_test_per_label=task.n_test_per_label)


def samples_table(task: TaskData) -> pa.Table:
    """The samples.parquet table: split, sample_id, prompt, response, label."""
    rows = [("train", i, s) for i, s in enumerate(task.train)] + [("test", i, s) for i, s in enumerate(task.test)]
    return pa.table({
        "split": pa.array([r[0] for r in rows], pa.string()),
        "sample_id": pa.array([r[1] for r in rows], pa.int32()),
        "prompt": pa.array([r[2].prompt for r in rows], pa.string()),
        "response": pa.array([r[2].response for r in rows], pa.string()),
        "label": pa.array([r[2].label for r in rows], pa.string()),
    })


def scores_table(method: str, checkpoint: int, S: np.ndarray, train_offset: int = 0) -> pa.Table:
    """Long form of a score block S [n_test, n_shard]: method, checkpoint, test_id, train_id, score."""
    m, n = S.shape
    return pa.table({
        "method": pa.array([method] * (m * n), pa.string()),
        "checkpoint": pa.array(np.full(m * n, checkpoint, np.int32)),
        "test_id": pa.array(np.repeat(np.arange(m, dtype=np.int32), n)),
        "train_id": pa.array(np.tile(np.arange(train_offset, train_offset + n, dtype=np.int32), m)),
        "score": pa.array(S.astype(np.float32).ravel()),
    })


@dataclass
class Evaluation:
    """Metric rows for one run, filled checkpoint by checkpoint and method by method."""

    train_labels: list[str]
    test_labels: list[str]
    k: int

    def __post_init__(self):
        self.metrics: list[dict] = []
        self.per_label: list[dict] = []
        self.agreement: list[dict] = []

    def add(self, method: str, checkpoint: int, S: np.ndarray) -> dict:
        row = metrics.summarize(S, self.train_labels, self.test_labels, k=self.k)
        self.metrics.append({"method": method, "checkpoint": checkpoint, **row})
        for r in metrics.per_label(S, self.train_labels, self.test_labels, k=self.k):
            self.per_label.append({"method": method, "checkpoint": checkpoint, "k": self.k, **r})
        return row

    def add_agreement(self, checkpoint: int, matrices: dict[str, np.ndarray]) -> None:
        for a, b in itertools.combinations(sorted(matrices), 2):
            ag = metrics.agreement(matrices[a], matrices[b], k=self.k)
            self.agreement.append({"checkpoint": checkpoint, "method_a": a, "method_b": b, "k": self.k,
                                   "spearman": float(ag["spearman"]), "overlap": float(ag["overlap"])})

    def write(self, writer) -> None:
        writer.write_table("metrics.parquet", rows_table(self.metrics, METRICS_COLUMNS))
        writer.write_table("label_metrics.parquet", rows_table(self.per_label, LABEL_METRICS_COLUMNS))
        writer.write_table("agreement.parquet", rows_table(self.agreement, AGREEMENT_COLUMNS))


METRICS_COLUMNS = {
    "method": pa.string(), "checkpoint": pa.int32(), "k": pa.int32(), "acc": pa.float64(),
    "coverage": pa.float64(), "auprc": pa.float64(), "chance_acc": pa.float64(), "chance_coverage": pa.float64(),
    "best_coverage": pa.float64(), "n_distinct_top1": pa.int32(),
}
LABEL_METRICS_COLUMNS = {
    "method": pa.string(), "checkpoint": pa.int32(), "k": pa.int32(), "label": pa.string(),
    "n_test": pa.int32(), "acc": pa.float64(), "coverage": pa.float64(),
}
AGREEMENT_COLUMNS = {
    "checkpoint": pa.int32(), "method_a": pa.string(), "method_b": pa.string(), "k": pa.int32(),
    "spearman": pa.float64(), "overlap": pa.float64(),
}


def rows_table(rows: list[dict], columns: dict[str, pa.DataType]) -> pa.Table:
    """A table with exactly ``columns`` (name → Arrow type) from a list of row dicts (extra keys ignored)."""
    return pa.table({name: pa.array([r[name] for r in rows], type=tp) for name, tp in columns.items()})


def loss_table(losses: list[tuple[int, int, float]]) -> pa.Table:
    """train_loss.parquet from (epoch, step, loss) tuples."""
    rows = [{"epoch": e, "step": st, "loss": v} for e, st, v in losses]
    return rows_table(rows, {"epoch": pa.int32(), "step": pa.int32(), "loss": pa.float64()})


def check_task(task: TaskData) -> None:
    """Refuse data that attribution cannot be judged on (empty split, test labels unseen in train)."""
    if not task.train or not task.test:
        raise InputError(f"dataset {task.name!r}: the {'train' if not task.train else 'test'} split is empty")
    unseen = sorted({s.label for s in task.test} - {s.label for s in task.train})
    if unseen:
        raise InputError(f"dataset {task.name!r}: labels only in test: {', '.join(unseen)}")


def _features(f: SampleFeatures, history: list, **extra) -> Features:
    return Features(grads=f.grads, reps=f.reps, block_names=f.block_names, history=tuple(history), kfac=f.kfac,
                    **extra)


def _lora_scaling(model) -> float:
    """peft's LoRA scaling alpha / r of the active adapter (the merged update is scaling * B @ A)."""
    cfg = model.peft_config["default"]
    return float(cfg.lora_alpha) / float(cfg.r)


def _say(progress: bool):
    """Stage messages: to stderr when showing progress, else to the log."""
    if progress:
        return lambda msg: print(msg, file=sys.stderr, flush=True)
    return log.info


def run_pipeline(spec: RunSpec, runs_dir: Path, progress: bool = True) -> Path:
    """Run ``spec`` into ``runs_dir/<spec.run_name>``; return the committed folder.

    Bad input raises InputError before anything is written; any failure leaves no visible run folder.
    """
    t0 = time.perf_counter()
    task = load_task(spec.task)
    check_task(task)
    methods = [get_method(m) for m in spec.scoring.methods]
    device = resolve_device(spec.device)
    dtype = torch.bfloat16 if spec.dtype == "bfloat16" else torch.float32
    model, tok = load_base(spec.model.name, trust_remote_code=spec.model.trust_remote_code, dtype=dtype)
    model = add_lora(model, spec.lora, seed=spec.train.seed).to(device)

    def enc(s):
        return encode(s, tok, spec.train.template, spec.train.max_length, spec.train.loss_on,
                      spec.train.preprocessing)

    train_enc = [enc(s) for s in task.train]
    test_enc = [enc(s) for s in task.test]
    train_labels = [s.label for s in task.train]
    test_labels = [s.label for s in task.test]
    k = spec.scoring.k or metrics.paper_k(train_labels)
    timings: dict[str, float] = {}

    with open_run(runs_dir, spec.run_name) as writer:
        writer.write_table("samples.parquet", samples_table(task))
        t = time.perf_counter()
        torch.manual_seed(spec.train.seed)
        result = finetune(model, train_enc, tok.pad_token_id, spec.train, device, progress=progress)
        timings["finetune_s"] = time.perf_counter() - t
        writer.write_table("train_loss.parquet", loss_table(result.losses))
        adapter_cfg = json.dumps(model.peft_config["default"].to_dict(), default=list, indent=1)
        for epoch, state in enumerate([result.initial, *result.epochs]):
            folder = writer.path(f"checkpoints/epoch-{epoch}")
            folder.mkdir(parents=True, exist_ok=True)
            save_file({k_: v.contiguous() for k_, v in state.items()}, str(folder / "adapter_model.safetensors"))
            (folder / "adapter_config.json").write_text(adapter_cfg, encoding="utf-8")

        n_epochs = len(result.epochs)
        ckpts = list(range(1, n_epochs + 1)) if spec.scoring.checkpoints == "all" else [n_epochs]
        ev = Evaluation(train_labels, test_labels, k)
        timings["features_s"] = timings["scoring_s"] = 0.0
        notes: list[str] = []
        # TracIn needs every scored checkpoint's gradients; keep them only when it is asked for (memory).
        keep_history = "tracin" in spec.scoring.methods
        # K-FAC factors of the training samples are summed during their gradient pass, only when a method reads them.
        want_kfac = any("kfac" in m.needs for m in methods)
        # The *_proj methods read a seeded projection of the gradients, made for every training shard right after
        # its gradients; when nothing else reads the full training gradients they are dropped shard by shard, so
        # only the projections of all training samples are ever held (what lets 100k samples fit in memory).
        proj_args = ((spec.scoring.proj_dim, spec.scoring.proj_seed, DEFAULT_KIND)
                     if any("proj" in m.needs for m in methods) else None)
        keep_full = keep_history or "ihvp" in spec.analysis.stages or any(m.needs & {"grads", "kfac"} for m in methods)
        want_rept = any("rept" in m.needs for m in methods)
        drift: list[dict] = []  # score_drift rows (convergence analysis)
        prev_matrices: dict[str, np.ndarray] = {}
        train_hist: list = []
        test_hist: list = []
        for c in ckpts:
            set_lora_state(model, result.epochs[c - 1])
            model.eval()
            t = time.perf_counter()
            bs = spec.scoring.grad_batch_size
            extra_train, extra_test = {}, {}
            if proj_args:
                train_f, extra_train["proj"] = features_in_shards_projected(
                    model, train_enc, tok.pad_token_id, device, spec.scoring.shard_size, bs, proj_args, keep_full,
                    f"train grads @{c}", progress, kfac=want_kfac)
            else:
                train_f = features_in_shards(model, train_enc, tok.pad_token_id, device, spec.scoring.shard_size, bs,
                                             f"train grads @{c}", progress, kfac=want_kfac)
            test_f = sample_features(model, test_enc, tok.pad_token_id, device, bs, f"test grads @{c}", progress)
            if proj_args:
                extra_test["proj"] = Projector([g.shape[1] for g in test_f.grads], *proj_args).project(test_f.grads)
            if want_rept:
                extra_train["rept"] = rept_features(model, train_enc, tok.pad_token_id, device, bs,
                                                    desc=f"train RepT @{c}", progress=progress)
                extra_test["rept"] = rept_features(model, test_enc, tok.pad_token_id, device, bs,
                                                   desc=f"test RepT @{c}", progress=progress)
            timings["features_s"] += time.perf_counter() - t
            if keep_history:
                train_hist.append((result.epoch_lr(c), train_f.grads))
                test_hist.append((result.epoch_lr(c), test_f.grads))
            train_x, test_x = _features(train_f, train_hist, **extra_train), _features(test_f, test_hist, **extra_test)
            t = time.perf_counter()
            matrices = {}
            spec_params = {"lambda_c": spec.scoring.lambda_c, "proj_dim": spec.scoring.proj_dim,
                           "proj_seed": spec.scoring.proj_seed}
            for method in methods:
                params = {name: v for name, v in spec_params.items() if name in method.defaults}
                blocks = []
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", RuntimeWarning)
                    for shard, (start, stop, S_block) in enumerate(score_in_shards(
                            method.name, train_x, test_x, spec.scoring.shard_size, **params)):
                        writer.write_table(f"scores/{method.name}-ckpt{c}-shard{shard:04d}.parquet",
                                           scores_table(method.name, c, np.asarray(S_block), start))
                        blocks.append(np.asarray(S_block))
                if caught:  # e.g. LiSSA blocks that hit max_iter: one line per method, kept in the manifest
                    notes.append(f"{method.name} @ checkpoint {c}: {len(caught)} warning(s), first: "
                                 f"{caught[0].message}")
                    log.warning(notes[-1])
                S = np.concatenate(blocks, axis=1)
                matrices[method.name] = S
                ev.add(method.name, c, S)
            ev.add_agreement(c, matrices)
            if "convergence" in spec.analysis.stages and prev_matrices:
                drift += [score_drift(name, c, prev_matrices[name], S) for name, S in matrices.items()]
            prev_matrices = matrices
            timings["scoring_s"] += time.perf_counter() - t
        ev.write(writer)
        if spec.analysis.stages:
            timings.update(run_stages(StageInputs(
                spec=spec, model=model, tok=tok, task=task, train_enc=train_enc, test_enc=test_enc,
                states=[result.initial, *result.epochs], scaling=_lora_scaling(model), checkpoint=ckpts[-1],
                train_grads=train_x.grads, test_grads=test_x.grads, block_names=train_x.block_names,
                matrices=prev_matrices, drift=drift, device=device, kfac=train_x.kfac, runs_dir=runs_dir),
                writer.write_table,
                _say(progress)))
        timings["total_s"] = time.perf_counter() - t0
        return writer.commit({
            "run": spec.run_name, "kind": "pipeline", "spec": spec.to_dict(), "spec_hash": spec.spec_hash,
            "model": spec.model.name, "task": task.name, "methods": [m.name for m in methods],
            "checkpoints": ckpts, "n_train": len(task.train), "n_test": len(task.test),
            "labels": task.labels, "k_default": k, "device": str(device), "timings": timings,
            "warnings": notes, "analyses": list(spec.analysis.stages),
        })
