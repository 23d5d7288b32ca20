"""The paper's three analyses, run as stages of a pipeline run (spec ``analysis.stages``).

- ``ihvp``        (:mod:`engine.analysis.ihvp_error`): iHVP approximation error vs subset size, damping, steps.
- ``convergence`` (:mod:`engine.analysis.convergence`): losses, generation accuracy, score stability per epoch.
- ``retrain``     (:mod:`engine.analysis.retrain`): parameter change vs output change under group removal.

:func:`run_stages` is what the pipeline calls after scoring; it writes one Parquet file per table
(:data:`TABLES`, the same columns as the store's tables) into the run folder.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)

_S, _I, _F, _B = pa.string(), pa.int32(), pa.float64(), pa.bool_()

# file stem -> {column: Arrow type}; store/schema.py declares the same tables
TABLES: dict[str, dict[str, pa.DataType]] = {
    "ihvp_error": {"checkpoint": _I, "level": _S, "description": _S, "dim": pa.int64(), "n_blocks": _I,
                   "method": _S, "lambda_c": _F, "iterations": _I, "rel_error": _F, "cosine": _F, "spearman": _F,
                   "acc": _F, "acc_exact": _F, "time_s": _F, "time_exact_s": _F, "note": _S},
    "checkpoint_eval": {"checkpoint": _I, "train_loss": _F, "test_loss": _F, "gen_acc": _F, "behaviour_rate": _F},
    "score_drift": {"method": _S, "checkpoint": _I, "spearman_prev": _F, "top1_same_prev": _F},
    "retrain_groups": {"group_id": _S, "kind": _S, "description": _S, "n_removed": _I, "removed": _S,
                       "param_change": _F, "delta_norm_mean": _F, "delta_norm_std": _F, "ba_norm_mean": _F,
                       "ba_norm_std": _F, "mean_dloss": _F, "mean_abs_dloss": _F, "kl_mean": _F,
                       "behaviour_rate": _F, "behaviour_change": _F, "gen_acc": _F, "identical": _B, "time_s": _F},
    "retrain_modules": {"group_id": _S, "module": _S, "delta_norm": _F, "ba_norm": _F},
    "retrain_tests": {"group_id": _S, "test_id": _I, "dloss": _F, "kl": _F},
    "retrain_predictions": {"group_id": _S, "method": _S, "test_id": _I, "predicted": _F},
    "retrain_methods": {"method": _S, "spearman_pooled": _F, "lds": _F, "n_pairs": _I, "n_random": _I},
}


def table(name: str, rows: list[dict]) -> pa.Table:
    """Arrow table ``name`` with exactly the columns of :data:`TABLES` (None allowed in any column)."""
    return pa.table({c: pa.array([r.get(c) for r in rows], type=t) for c, t in TABLES[name].items()})


@dataclass
class StageInputs:
    """What the pipeline hands the analyses after scoring.

    states: LoRA state per epoch, ``states[0]`` the initial one. train_grads/test_grads, block_names: per-block
    gradients at ``checkpoint`` (the last scored one); matrices: every method's scores there [m, n].
    drift: score_drift rows collected while scoring.
    """

    spec: object
    model: object
    tok: object
    task: object
    train_enc: list
    test_enc: list
    states: list
    scaling: float
    checkpoint: int
    train_grads: list
    test_grads: list
    block_names: tuple
    matrices: dict[str, np.ndarray]
    drift: list[dict]
    device: object
    kfac: object = None  # K-FAC factors of the training samples at ``checkpoint`` (when a method needed them)


def run_stages(inp: StageInputs, write: Callable[[str, pa.Table], None],
               progress: Callable[[str], None]) -> dict[str, float]:
    """Run the spec's analysis stages; ``write(file_name, table)`` stores each table. Returns timings (s)."""
    a = inp.spec.analysis
    timings: dict[str, float] = {}
    train_labels = [s.label for s in inp.task.train]
    test_labels = [s.label for s in inp.task.test]
    refs = [s.response for s in inp.task.test]
    bs = inp.spec.scoring.grad_batch_size
    if "ihvp" in a.stages:
        from engine.analysis.ihvp_error import ihvp_error

        t = time.perf_counter()
        rows = ihvp_error(inp.train_grads, inp.test_grads, inp.block_names, train_labels, test_labels,
                          lambda_cs=a.ihvp_lambda_c, iterations=a.ihvp_iterations,
                          sweep_lambda_c=inp.spec.scoring.lambda_c, entries=a.ihvp_entries,
                          checkpoint=inp.checkpoint, kfac=inp.kfac, progress=progress)
        write("ihvp_error.parquet", table("ihvp_error", rows))
        timings["ihvp_s"] = time.perf_counter() - t
    if "convergence" in a.stages:
        from engine.analysis.convergence import checkpoint_eval

        t = time.perf_counter()
        rows = checkpoint_eval(inp.model, inp.tok, inp.states, inp.train_enc, inp.test_enc, refs,
                               inp.task.behaviour, inp.device, a.generate_tokens, bs, progress)
        write("checkpoint_eval.parquet", table("checkpoint_eval", rows))
        write("score_drift.parquet", table("score_drift", inp.drift))
        timings["convergence_s"] = time.perf_counter() - t
    if "retrain" in a.stages:
        timings["retrain_s"] = _retrain_stage(inp, write, progress, refs, train_labels)
    return timings


def _retrain_stage(inp: StageInputs, write, progress, refs, train_labels) -> float:
    from engine.analysis import retrain as rt
    from engine.analysis.outputs import generation_report, sample_losses
    from engine.finetune import set_lora_state

    a, t = inp.spec.analysis, time.perf_counter()
    bs = inp.spec.scoring.grad_batch_size
    original = inp.states[-1]
    set_lora_state(inp.model, original)
    orig_loss = sample_losses(inp.model, inp.test_enc, inp.tok.pad_token_id, inp.device, bs)
    _, orig_behaviour = generation_report(inp.model, inp.tok, inp.test_enc, refs, inp.task.behaviour, inp.device,
                                          a.generate_tokens, bs)
    ctx = rt.Context(model=inp.model, tok=inp.tok, initial=inp.states[0], original=original,
                     train_enc=inp.train_enc, test_enc=inp.test_enc, test_refs=refs, marker=inp.task.behaviour,
                     train_cfg=inp.spec.train, device=inp.device, scaling=inp.scaling,
                     max_new_tokens=a.generate_tokens, batch_size=bs, orig_loss=orig_loss,
                     orig_behaviour=orig_behaviour)
    groups = rt.removal_groups(train_labels, n_single=a.retrain_single, n_labels=a.retrain_labels,
                               fraction=a.retrain_fraction, n_random=a.retrain_seeds, seed=inp.spec.train.seed)
    workers = a.retrain_workers or rt.auto_workers(len(groups), inp.device)
    results = rt.run_retrainings(ctx, groups, workers, progress)
    tables = rt.result_tables(groups, results, inp.matrices, float(orig_behaviour.mean()))
    for name in ("groups", "modules", "tests", "predictions", "methods"):
        write(f"retrain_{name}.parquet", table(f"retrain_{name}", tables[name]))
    return time.perf_counter() - t
