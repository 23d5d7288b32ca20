"""The paper's three analyses, run as stages of a pipeline run (spec ``analysis.stages``).

- ``ihvp``        (:mod:`engine.analysis.ihvp_error`): iHVP approximation error vs subset size, damping, steps.
- ``convergence`` (:mod:`engine.analysis.convergence`): losses, generation accuracy, score stability per epoch.
- ``retrain``     (:mod:`engine.analysis.retrain`): parameter change vs output change under group removal.

:func:`run_stages` is what the pipeline calls after scoring; it writes one Parquet file per table
(:data:`TABLES`, declared in ``engine.runformat``) into the run folder.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa

from engine import runformat

log = logging.getLogger(__name__)

# file stem -> {column: type name}: the analysis tables of the run-folder format (declared in engine.runformat)
TABLES: dict[str, dict[str, str]] = {name: runformat.TABLES[name].columns for name in runformat.ANALYSIS_TABLES}
# the feature kinds (engine.plan) each analysis reads at the last scored checkpoint
NEEDS: dict[str, frozenset[str]] = {"ihvp": frozenset({"grads", "kfac"}), "convergence": frozenset(),
                                    "retrain": frozenset()}


def table(name: str, rows: list[dict]) -> pa.Table:
    """Arrow table ``name`` with exactly its declared columns (None allowed in any column)."""
    return runformat.table(name, rows)


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
