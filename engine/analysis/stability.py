"""The stability check: how far each method's ranking moves when one setting that should not matter changes.

For every method that reads the model (the baselines do not) and every perturbation that applies to it, the
method's scores with the run's setting (``S_ref``) and with the changed one (``S_alt``), both ``[n_test, n_train]``
on the same samples, are compared per test prompt by the package's one agreement rule
(:func:`engine.evaluation.metrics.agreement`): the top-k overlap ``|top_k(S_ref[j]) ∩ top_k(S_alt[j])| / k`` and the
Spearman correlation of the two rows, each averaged over the test prompts. The perturbations
(``engine.catalog.analyses.STABILITY_PERTURBATIONS``) and where their two score matrices come from (``source``):

- ``checkpoint`` (stored scores): the run's scores at the last scored checkpoint vs the one before (runs that
  score several);
- ``damping_x0.1`` / ``damping_x10`` (cached features): the methods with a damping, re-scored from the run's cached
  features at the last checkpoint with λ × 0.1 and λ × 10 (``lambda_c`` × 10 and × 0.1: λ = mean(g²) / λ_c),
  against the stored scores;
- ``proj_seed``, ``precision``, ``attention``, ``loss_positions`` (subset pass): one reference gradient pass over
  the first ``stability_train`` training and ``stability_test`` test samples at the last checkpoint with the run's
  settings, and one pass per perturbation: bfloat16 autocast of the model compute (runs in float32), the other
  attention kernel (eager ↔ SDPA), the loss over the whole sequence ↔ over the response only (the reference: a
  change that should matter); ``proj_seed`` re-scores the reference pass with ``proj_seed + 1``. The preconditioned
  methods take their statistics over the subset on both sides, so like is compared with like. TracIn sums over every
  checkpoint; a subset pass is taken at the last one only, so TracIn has no subset rows.

A method's ``stability`` is its mean top-k overlap over the perturbations that should not matter (all but
``loss_positions``): 1 = the same top k whatever those settings, 0 = nothing in common.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from engine.catalog.analyses import STABILITY_PERTURBATIONS
from engine.catalog.methods import method_info
from engine.data.encoding import encode
from engine.data.tasks.base import Sample
from engine.evaluation import metrics
from engine.features.grads import KroneckerFactors
from engine.features.plan import FeaturePlan
from engine.features.stage import CheckpointData, PassSettings, SideFeatures, method_features, side_features
from engine.features.types import Features
from engine.scoring.methods import score_in_shards
from engine.scoring.methods.base import ScoringMethod
from engine.spec.run_spec import TrainSpec

DAMPING = {"damping_x0.1": 0.1, "damping_x10": 10.0}  # perturbation -> factor on λ (λ_c is divided by it)


@dataclass
class StabilityInputs:
    """What the check reads. methods: the run's methods with their parameters; now/history: the cached features at
    the last scored checkpoint (``engine.features.stage.CheckpointData``) and the checkpoints TracIn sums over;
    matrices/previous: the stored scores ``[n_test, n_train]`` at the last and at the previous scored checkpoint
    (None with one); model: the peft model with the last checkpoint's LoRA state set, in eval mode; train/test: the
    samples; train_spec: the encoding settings; settings: how the passes run; dtype: the run's compute dtype."""

    methods: list[ScoringMethod]
    now: CheckpointData
    history: list[CheckpointData]
    matrices: dict[str, np.ndarray]
    previous: dict[str, np.ndarray] | None
    model: torch.nn.Module
    tok: object
    train: tuple[Sample, ...]
    test: tuple[Sample, ...]
    train_spec: TrainSpec
    settings: PassSettings
    dtype: str
    k: int
    n_train: int = 200
    n_test: int = 50


def model_methods(methods: list[ScoringMethod]) -> list[ScoringMethod]:
    """The methods whose scores come from the model (not the model-free baselines: nothing of theirs can move)."""
    return [m for m in methods if method_info(m.name).reads - {"text"}]


def compare(S_ref: np.ndarray, S_alt: np.ndarray, k: int) -> tuple[float, float]:
    """``(mean top-k overlap, mean Spearman)`` over the test prompts of two score matrices of the same samples
    (:func:`engine.evaluation.metrics.agreement`; k is capped at the number of training samples)."""
    ag = metrics.agreement(S_ref, S_alt, max(1, min(k, S_ref.shape[1])))
    return float(ag["overlap"]), float(ag["spearman"])


def row(method: str, perturbation: str, source: str, S_ref: np.ndarray, S_alt: np.ndarray, k: int,
        note: str = "") -> dict:
    """One ``stability`` row."""
    overlap, rho = compare(S_ref, S_alt, k)
    return {"method": method, "perturbation": perturbation, "should_matter": STABILITY_PERTURBATIONS[perturbation][1],
            "source": source, "n_train": int(S_ref.shape[1]), "n_test": int(S_ref.shape[0]),
            "k": max(1, min(k, S_ref.shape[1])), "overlap": overlap, "spearman": rho, "note": note}


def score(m: ScoringMethod, params, train, test) -> np.ndarray:
    """Method ``m`` with ``params`` on ``train`` (Features or TrainData) and ``test``: ``[n_test, n_train]``, NaN in
    the columns ``train`` does not hold (a TrainData of one process's shards under torchrun)."""
    S = np.full((test.n, train.n), np.nan)
    shard = max(1, train.n) if isinstance(train, Features) else None  # in-memory features: one shard
    for start, stop, block in score_in_shards(m.name, train, test, shard, p=params):
        S[:, start:stop] = block
    return S


def stored_rows(inp: StabilityInputs, methods: list[ScoringMethod]) -> list[dict]:
    """The ``checkpoint`` rows (stored scores) and the damping rows (re-scored from the cached features)."""
    rows = []
    for m in methods:
        if inp.previous is not None and m.name in inp.previous:
            rows.append(row(m.name, "checkpoint", "stored scores", inp.matrices[m.name], inp.previous[m.name], inp.k))
        if not hasattr(m.params, "lambda_c"):
            continue
        train, test = method_features(m.proj_key, inp.now, inp.history)
        for name, factor in DAMPING.items():
            alt = score(m, dataclasses.replace(m.params, lambda_c=m.params.lambda_c / factor), train, test)
            held = ~np.isnan(alt).any(axis=0)  # the training columns this process holds (all of them in one process)
            rows.append(row(m.name, name, "cached features", inp.matrices[m.name][:, held], alt[:, held], inp.k,
                            f"lambda_c {m.params.lambda_c:g} -> {m.params.lambda_c / factor:g}"))
    return rows


def _base_model(model):
    """The transformers model inside a peft wrapper (where the attention implementation is set)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextlib.contextmanager
def _attention(model, implementation: str):
    """The model with another attention kernel for the block; the original one restored after."""
    base = _base_model(model)
    before = base.config._attn_implementation
    base.set_attn_implementation(implementation)
    try:
        yield
    finally:
        base.set_attn_implementation(before)


def other_attention(model) -> str:
    """The kernel the ``attention`` perturbation switches to: eager for SDPA (or any other), SDPA for eager."""
    return "sdpa" if _base_model(model).config._attn_implementation == "eager" else "eager"


def _features(side: SideFeatures) -> Features:
    """One side of a subset pass as float32 Features (autocast can leave bfloat16 tensors)."""
    f32 = lambda t: None if t is None else t.float()  # noqa: E731
    kfac = side.kfac  # float64 sums, as the methods read them
    if kfac is not None:
        kfac = KroneckerFactors([a.double() for a in kfac.act], [g.double() for g in kfac.grad], kfac.tokens,
                                kfac.samples)
    grads = None if side.grads is None else [f32(g) for g in side.grads]
    return Features(grads=grads, reps=f32(side.reps), block_names=side.block_names, kfac=kfac, rept=f32(side.rept),
                    size=side.n)


def subset_pass(inp: StabilityInputs, plan: FeaturePlan, loss_on: str | None = None,
                context=contextlib.nullcontext) -> tuple[Features, Features]:
    """(train, test) Features of the subset (the first ``inp.n_train`` / ``inp.n_test`` samples) from one gradient
    pass at the model's current state, with the loss over ``loss_on`` positions (None: the run's) and the model
    compute inside ``context()``."""
    t = inp.train_spec
    enc = lambda s: encode(s, inp.tok, t.template, t.max_length, loss_on or t.loss_on, t.preprocessing,  # noqa: E731
                           t.pad_attention)
    train = [enc(s) for s in inp.train[: inp.n_train]]
    test = [enc(s) for s in inp.test[: inp.n_test]]
    settings = dataclasses.replace(inp.settings, shard_size=max(1, len(train)), progress=False)
    with context():
        tr = side_features(inp.model, train, settings, plan, train=True, keep_grads=True, desc="stability train")
        te = side_features(inp.model, test, settings, plan, train=False, keep_grads=True, desc="stability test")
    return _features(tr), _features(te)


def subset_plan(methods: list[ScoringMethod]) -> FeaturePlan:
    """What the subset passes compute: full gradients (the projected methods project them themselves, with either
    seed), representations, K-FAC factors and RepT parts as the methods read them."""
    reads = set().union(*(method_info(m.name).reads for m in methods)) if methods else set()
    return FeaturePlan(grads=bool(reads & {"grads", "proj"}), reps="reps" in reads, kfac="kfac" in reads,
                       rept="rept" in reads)


def perturbed_passes(inp: StabilityInputs) -> dict[str, tuple[Callable, str | None, str]]:
    """perturbation -> (model context, loss positions, note) of each subset pass that applies to this run."""
    flipped = "sequence" if inp.train_spec.loss_on == "response" else "response"
    kernel = other_attention(inp.model)
    out = {"attention": (lambda: _attention(inp.model, kernel), None,
                         f"{_base_model(inp.model).config._attn_implementation} -> {kernel}")}
    if inp.train_spec.preprocessing == "clean":  # "paper" puts the loss on every position whatever loss_on says
        out["loss_positions"] = (contextlib.nullcontext, flipped, f"loss_on {inp.train_spec.loss_on} -> {flipped}")
    if inp.dtype == "float32":
        device = inp.settings.device.type
        out["precision"] = (lambda: torch.autocast(device, dtype=torch.bfloat16), None,
                            "float32 -> bfloat16 autocast")
    return dict(sorted(out.items(), key=lambda kv: list(STABILITY_PERTURBATIONS).index(kv[0])))


def subset_rows(inp: StabilityInputs, methods: list[ScoringMethod]) -> list[dict]:
    """The rows of the subset passes: ``proj_seed`` from the reference pass, then one pass per perturbation."""
    methods = [m for m in methods if "history" not in method_info(m.name).reads]
    if not methods:
        return []
    plan = subset_plan(methods)
    source = f"subset pass ({min(inp.n_train, len(inp.train))} train, {min(inp.n_test, len(inp.test))} test)"
    ref_train, ref_test = subset_pass(inp, plan)
    ref = {m.name: score(m, m.params, ref_train, ref_test) for m in methods}
    rows = []
    for m in methods:
        if hasattr(m.params, "proj_seed"):
            alt = score(m, dataclasses.replace(m.params, proj_seed=m.params.proj_seed + 1), ref_train, ref_test)
            rows.append(row(m.name, "proj_seed", source, ref[m.name], alt, inp.k,
                            f"proj_seed {m.params.proj_seed} -> {m.params.proj_seed + 1}"))
    for name, (context, loss_on, note) in perturbed_passes(inp).items():
        train, test = subset_pass(inp, plan, loss_on, context)
        rows += [row(m.name, name, source, ref[m.name], score(m, m.params, train, test), inp.k, note)
                 for m in methods]
    return rows


def summary_rows(rows: list[dict]) -> list[dict]:
    """``stability_methods``: per method, the mean overlap (its stability) and mean Spearman over the rows that should
    not matter, the worst of them, and the reference's overlap."""
    out = []
    for method in sorted({r["method"] for r in rows}):
        mine = [r for r in rows if r["method"] == method and not r["should_matter"]]
        ref = [r["overlap"] for r in rows if r["method"] == method and r["should_matter"]]
        worst = min(mine, key=lambda r: r["overlap"]) if mine else None
        rhos = [r["spearman"] for r in mine if not np.isnan(r["spearman"])]
        out.append({"method": method, "stability": float(np.mean([r["overlap"] for r in mine])) if mine else None,
                    "spearman": float(np.mean(rhos)) if rhos else None, "n_perturbations": len(mine),
                    "worst": worst["perturbation"] if worst else None,
                    "worst_overlap": worst["overlap"] if worst else None,
                    "reference_overlap": ref[0] if ref else None})
    return out


def stability(inp: StabilityInputs) -> tuple[list[dict], list[dict]]:
    """``(stability rows, stability_methods rows)``; leaves the model as it found it (state, kernel, dtype). The
    model-free baselines have no rows and a stability of 1 (no setting reaches their scores)."""
    methods = model_methods(inp.methods)
    rows = stored_rows(inp, methods) + subset_rows(inp, methods)
    order = list(STABILITY_PERTURBATIONS)
    rows.sort(key=lambda r: (r["method"], order.index(r["perturbation"])))
    fixed = [{"method": m.name, "stability": 1.0, "spearman": 1.0, "n_perturbations": 0} for m in inp.methods
             if m not in methods]
    return rows, sorted(summary_rows(rows) + fixed, key=lambda r: r["method"])
