"""The analysis stages of a run: what the pipeline hands them (:class:`StageInputs`), running the spec's stages
after scoring (:func:`run_stages`) and, under torchrun, spreading the retrainings over the ranks
(:func:`spread_retrainings`). Each stage writes its tables (declared in ``engine.runfolder.runformat``) into the run
folder."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import pyarrow as pa
import torch

from engine.analysis import retrain as rt
from engine.analysis.bank import RetrainBank, bank_root, base_digest, encoded_digest, state_digest
from engine.analysis.convergence import checkpoint_eval
from engine.analysis.ihvp_error import ihvp_error
from engine.analysis.metagrad import WithRows, metagrad_matrix, metagrad_prompts
from engine.analysis.outputs import generation_report, sample_losses
from engine.analysis.retrain_tables import result_tables
from engine.analysis.stability import StabilityInputs, stability
from engine.catalog.analyses import METAGRAD
from engine.data.encoding import Encoded
from engine.data.tasks.base import TaskData
from engine.features.grads import KroneckerFactors
from engine.features.stage import CheckpointData, PassSettings
from engine.model.finetune import library_versions, set_lora_state
from engine.runfolder import runformat
from engine.scoring.methods.base import ScoringMethod
from engine.spec.run_spec import RunSpec

if TYPE_CHECKING:  # the tokenizer's type only: importing transformers costs a second
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# file stem -> {column: type name}: the analysis tables of the run-folder format (declared in engine.runfolder.runformat)
TABLES: dict[str, dict[str, str]] = {name: runformat.TABLES[name].columns for name in runformat.ANALYSIS_TABLES}


def table(name: str, rows: list[dict]) -> pa.Table:
    """Arrow table ``name`` with exactly its declared columns (None allowed in any column)."""
    return runformat.table(name, rows)


@dataclass
class StageInputs:
    """What the pipeline hands the analyses after scoring.

    model: the peft-wrapped causal LM (``engine.model.states.LoadedModel.model``; a ``peft.PeftModel``, typed as
    the torch module it is), tok: its tokenizer. states: LoRA state per epoch, ``states[0]`` the initial one.
    train_grads/test_grads, block_names: per-block gradients [n, d_l] / [m, d_l] at ``checkpoint`` (the last
    scored one); train_grads is None unless the ``ihvp`` stage reads them. matrices: every method's scores there
    [m, n]. drift: score_drift rows collected while scoring.
    """

    spec: RunSpec
    model: torch.nn.Module
    tok: PreTrainedTokenizerBase
    task: TaskData
    train_enc: list[Encoded]
    test_enc: list[Encoded]
    states: list[dict[str, torch.Tensor]]
    scaling: float
    checkpoint: int
    train_grads: list[torch.Tensor] | None
    test_grads: list[torch.Tensor]
    block_names: tuple[str, ...]
    matrices: dict[str, np.ndarray]
    drift: list[dict]
    device: torch.device
    kfac: KroneckerFactors | None = None  # K-FAC factors of the training samples at ``checkpoint`` (when needed)
    runs_dir: Path | None = None  # the runs folder; the retrain bank defaults to ``retrain-bank`` beside it
    # the stability check: the run's methods, the cached features at ``checkpoint`` and the checkpoints before it
    # that TracIn sums, the stored scores at the previous scored checkpoint (None with one), how passes run, k
    methods: list[ScoringMethod] | None = None
    features: CheckpointData | None = None
    history: list[CheckpointData] | None = None
    previous: dict[str, np.ndarray] | None = None
    settings: PassSettings | None = None
    k: int = 10

    @property
    def batch_size(self) -> int:
        """Samples per batch of the analyses' passes: the run's gradient-pass batch (``scoring.grad_batch_size``,
        resolved by the pipeline when automatic)."""
        return self.settings.batch_size if self.settings else self.spec.scoring.grad_batch_size or 16


def run_stages(inp: StageInputs, write: Callable[[str, pa.Table], None],
               progress: Callable[[str], None]) -> dict[str, float]:
    """Run the spec's analysis stages; ``write(file_name, table)`` stores each table. Returns timings (s)."""
    a = inp.spec.analysis
    timings: dict[str, float] = {}
    train_labels = [s.label for s in inp.task.train]
    test_labels = [s.label for s in inp.task.test]
    refs = [s.response for s in inp.task.test]
    bs = inp.batch_size
    if "stability" in a.stages:
        timings.update(_stability_stage(inp, write, progress))
    if "ihvp" in a.stages:
        t = time.perf_counter()
        rows = ihvp_error(inp.train_grads, inp.test_grads, inp.block_names, train_labels, test_labels,
                          lambda_cs=a.ihvp_lambda_c, iterations=a.ihvp_iterations,
                          sweep_lambda_c=inp.spec.scoring.lambda_c, entries=a.ihvp_entries,
                          checkpoint=inp.checkpoint, kfac=inp.kfac, progress=progress)
        write("ihvp_error.parquet", table("ihvp_error", rows))
        timings["ihvp_s"] = time.perf_counter() - t
    if "convergence" in a.stages:
        t = time.perf_counter()
        rows = checkpoint_eval(inp.model, inp.tok, inp.states, inp.train_enc, inp.test_enc, refs,
                               inp.task.behaviour, inp.device, a.generate_tokens, bs, progress)
        write("checkpoint_eval.parquet", table("checkpoint_eval", rows))
        write("score_drift.parquet", table("score_drift", inp.drift))
        timings["convergence_s"] = time.perf_counter() - t
    if "retrain" in a.stages:
        timings.update(_retrain_stage(inp, write, progress, refs))
    return timings


def _stability_stage(inp: StageInputs, write, progress) -> dict[str, float]:
    """The stability check (engine.analysis.stability) at the last scored checkpoint; skipped above
    ``analysis.stability_max_train`` training samples (a logged warning, no tables)."""
    a, t = inp.spec.analysis, time.perf_counter()
    if len(inp.task.train) > a.stability_max_train:
        log.warning(f"stability: skipped, {len(inp.task.train)} training samples is over analysis.stability_max_train"
                    f" = {a.stability_max_train}")
        return {}
    progress("stability: re-scoring with perturbed settings")
    set_lora_state(inp.model, inp.states[inp.checkpoint])
    inp.model.eval()
    rows, summary = stability(StabilityInputs(
        methods=inp.methods, now=inp.features, history=inp.history or [], matrices=inp.matrices,
        previous=inp.previous, model=inp.model, tok=inp.tok, train=inp.task.train, test=inp.task.test,
        train_spec=inp.spec.train, settings=inp.settings, dtype=inp.spec.dtype, k=inp.k, n_train=a.stability_train,
        n_test=a.stability_test))
    write("stability.parquet", table("stability", rows))
    write("stability_methods.parquet", table("stability_methods", summary))
    return {"stability_s": time.perf_counter() - t}


RETRAIN_TABLES = ("groups", "modules", "tests", "predictions", "methods", "lds", "counterfactual", "decomposition")


def _retrain_context(inp: StageInputs, refs) -> rt.Context:
    """The retraining context: model, data, recipe, and the retrain bank keyed by them."""
    a, tr, lora = inp.spec.analysis, inp.spec.train, inp.spec.lora
    original = inp.states[-1]
    identity = {
        "base": base_digest(inp.model),
        "adapter": {"initial": state_digest(inp.states[0]), "r": lora.r, "alpha": lora.alpha,
                    "dropout": lora.dropout, "targets": sorted(lora.target_modules)},
        "data": encoded_digest(inp.train_enc, inp.tok.pad_token_id),
        "recipe": {"epochs": tr.epochs, "batch_size": tr.batch_size, "lr": tr.lr, "weight_decay": tr.weight_decay,
                   "max_grad_norm": tr.max_grad_norm, "dtype": inp.spec.dtype, "device": inp.device.type,
                   "pad_attention": tr.pad_attention, "removal": rt.REMOVAL},
        "libraries": library_versions(),
    }
    bank = RetrainBank(bank_root(a.retrain_bank, inp.runs_dir), identity)
    eval_settings = {"test": encoded_digest(inp.test_enc, inp.tok.pad_token_id), "reference": state_digest(original),
                     "refs": list(refs), "marker": inp.task.behaviour, "tokens": a.generate_tokens,
                     "eos": inp.tok.eos_token_id}
    ctx = rt.Context(model=inp.model, tok=inp.tok, initial=inp.states[0], original=original,
                     train_enc=inp.train_enc, test_enc=inp.test_enc, test_refs=refs, marker=inp.task.behaviour,
                     train_cfg=tr, device=inp.device, scaling=inp.scaling, max_new_tokens=a.generate_tokens,
                     batch_size=inp.batch_size, bank=bank, eval_settings=eval_settings)
    return ctx


def _retrain_plan(inp: StageInputs, matrices: dict[str, np.ndarray]):
    """The retrainings: ``(groups, k, jobs)``, the top-k sets from ``matrices`` (the run's scores; in the retrain
    stage with metagrad's rows added)."""
    groups, _, k = rt.plan([s.label for s in inp.task.train], [s.label for s in inp.task.test], matrices,
                           inp.spec.analysis, inp.spec.train.seed)
    return groups, k, rt.unique_retrainings(groups)


def spread_retrainings(inp: StageInputs, rank: int, world_size: int, progress) -> int:
    """Under torchrun, before rank 0 runs the analyses: this process runs its share of the retrainings (every
    ``world_size``-th, from ``rank``) into the retrain bank, where rank 0's retrain stage then finds them all; the
    caller waits for every process after. Returns how many this process measured (0 without a bank: then rank 0
    retrains alone)."""
    if world_size <= 1 or "retrain" not in inp.spec.analysis.stages:
        return 0
    ctx = _retrain_context(inp, [s.response for s in inp.task.test])
    _, _, jobs = _retrain_plan(inp, inp.matrices)  # metagrad's own top-k sets are left to rank 0
    if ctx.bank.root is None:
        return 0
    mine = jobs[rank::world_size]
    workers = inp.spec.analysis.retrain_workers or rt.auto_workers(len(mine), inp.device)
    rt.run_retrainings(ctx, mine, workers, progress)
    return len(mine)


def _retrain_stage(inp: StageInputs, write, progress, refs) -> dict[str, float]:
    """The retraining analysis; returns its time, the number of retrainings run and reused from the bank, and
    the seconds spent fine-tuning the new ones."""
    a, t = inp.spec.analysis, time.perf_counter()
    bs = inp.batch_size
    tr = inp.spec.train
    set_lora_state(inp.model, inp.states[-1])
    orig_loss = sample_losses(inp.model, inp.test_enc, inp.tok.pad_token_id, inp.device, bs)
    _, orig_behaviour = generation_report(inp.model, inp.tok, inp.test_enc, refs, inp.task.behaviour, inp.device,
                                          a.generate_tokens, bs)
    ctx = _retrain_context(inp, refs)
    prompts = metagrad_prompts([s.label for s in inp.task.test], a.metagrad_prompts, tr.seed)
    exact, exact_rows, exact_t = metagrad_matrix(ctx, prompts, tr.seed, progress)
    matrices = WithRows(inp.matrices, METAGRAD, exact) if prompts else inp.matrices
    groups, k, jobs = _retrain_plan(inp, matrices)
    workers = a.retrain_workers or rt.auto_workers(len(jobs), inp.device)
    done = dict(zip([(r, s) for r, s, _ in jobs], rt.run_retrainings(ctx, jobs, workers, progress)))
    results = {g.group_id: done[g.retraining] for g in groups}
    tables = result_tables(groups, results, matrices, orig_loss, float(orig_behaviour.mean()), k,
                           a.lds_fraction, seed=tr.seed)
    tables["metagrad"] = exact_rows
    for name in RETRAIN_TABLES + ("metagrad",):
        write(f"retrain_{name}.parquet", table(f"retrain_{name}", tables[name]))
    if any(r["kind"] == "identity" and not r["identical"] for r in tables["groups"]):
        log.warning("retrain: the retraining with nothing removed does not reproduce the original adapter bit for "
                    "bit, so a removal's measured effect holds more than the removal (retrain_groups, 'identity')")
    new = [r for r in done.values() if not r["cached"]]
    return {"retrain_s": time.perf_counter() - t, "retrain_new": float(len(new)), **exact_t,
            "retrain_reused": float(len(done) - len(new)), "retrain_finetune_s": float(sum(r["train_s"] for r in new))}
