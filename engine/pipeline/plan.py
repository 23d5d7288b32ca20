"""The memory plan: what a run of a spec will need — peak memory per stage and disk — before anything is loaded.

``python -m engine plan SPEC.yaml [--memory-gb G] [--device cuda --gpu-memory-gb G]`` (and the Jobs form, before a
job is queued). The model is built on the meta device from its configuration (``config.json``: nothing is loaded,
nothing downloaded), the LoRA adapter is wrapped around it there, and the data is read and tokenised (no model
weights needed) for the real sequence lengths. From these shapes, each stage's peak is the sum of what it holds:

==============  ============================================================================================
every stage     the runtime (interpreter, torch, transformers, the store's libraries: :func:`runtime_mb`, measured) and
                the base weights (parameters x element size; 4-bit ~0.5 byte, 8-bit 1 byte per linear weight)
fine-tune       the adapter's training state (weights, gradients, AdamW's two moments: 16 bytes per LoRA
                value), one micro-batch's saved activations (:func:`engine.model.footprint.activation_bytes_per_token`
                x micro-batch x longest sample), the LM head's chunks (:func:`head_mb`), the recorded states
features        one gradient batch's activations and its per-sample gradients (a training shard streams into
                its cache file, so its gradients are not held), the test side's gradients, the K-FAC factor
                sums, the projections and their matrices
each method     the cached tensors kept in memory (``scoring.feature_memory_mb``) and one shard read, the
                method's training-side statistics (Gram factors, Kronecker eigenbases), the preconditioned test
                gradients (float64) and the score matrix (float64)
==============  ============================================================================================

On CUDA the activations, the head's chunks and the batch's gradients live on the GPU and are predicted there (torch's
allocator peak, as the run's probe reads it; the CUDA context's ~0.5 GB is not in it); shards, statistics and scores
live in host memory. Disk: the feature cache (every computed checkpoint's training shards and test part, the adapter
states), the run folder's score files, and the query index.

The prediction is checked against the peaks the run's probe measures (``peak_memory_mb`` in its manifest:
:mod:`engine.pipeline.memory`): within 25 % on the tiny model (a test) and on SmolLM2-135M (README). From the budget
it proposes the largest ``scoring.grad_batch_size`` (and ``train.micro_batch_size``) whose stage fits, a
``scoring.shard_size`` whose gradients take at most a quarter of it, and the largest projection dimension whose
projected training features take at most a quarter of it (for the ``*_proj`` methods).

Sizes are in MB (2**20 bytes) throughout.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

import torch

from engine.errors import InputError
from engine.features.plan import FeaturePlan
from engine.features.stage import shard_bounds
from engine.model import adapters
from engine.model.base import base_config, load_tokenizer, meta_model
from engine.model.finetune import add_lora
from engine.model.footprint import MAX_AUTO_BATCH, activation_bytes_per_token, batch_for_bytes
from engine.model.lm_loss import HEAD_CHUNK_MB
from engine.pipeline.memory import status_mb
from engine.pipeline.stages import encode_data, feature_plan, load_data, releases_early, run_methods
from engine.scoring.methods import get_method
from engine.scoring.methods._common import GRAM_MEMO_BYTES
from engine.spec.run_spec import RunSpec

MB = 1 << 20
# The process before it holds anything of the run: Python, torch, transformers, peft, pyarrow, the store's
# libraries. Measured here (runtime_mb): this process's resident size once it has imported what a run imports, plus
# what a run's start adds (threads, the tokenizer, the data: RUN_START_MB, the tiny model's load stage minus those
# imports, 515 - 323 MB on this project's CPU machines). RUNTIME_MB where /proc cannot be read.
RUNTIME_MB = 500.0
RUN_START_MB = 190.0


@functools.cache
def runtime_mb() -> float:
    """The runtime of a run on this machine, in MB (see RUN_START_MB): the libraries' footprint differs between
    environments (a CI virtualenv measured 73 MB more than a developer's)."""
    import engine.pipeline.run  # noqa: F401  (everything a run imports)

    found = status_mb("VmRSS")
    return found + RUN_START_MB if found is not None else RUNTIME_MB


def head_mb(vocab: int, positions: int) -> float:
    """The LM head at a batch's loss positions: a chunk of logits (at most HEAD_CHUNK_MB, engine.model.lm_loss),
    its softmax and its gradient."""
    return 3.0 * min(float(HEAD_CHUNK_MB), 4 * vocab * positions / MB)


# the methods that read the shard's full gradients (their per-method state beyond the shard being read: the
# statistics they keep, Method.keeps)
_GRADIENT_METHODS = ("exact", "lissa", "lissa_paper", "kfac", "ekfac", "tracin", "datainf", "gradsim", "gradcos")
# LoRA-wrapped layers of one module that read the same input (Llama-style names), so share their K-FAC factor
_SAME_INPUT = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "gate_proj": "gate_up", "up_proj": "gate_up"}
_KEPT_FAMILY = {"Gram factors kept": "gram", "eigenbases": "kronecker"}  # engine.scoring.methods.base.STATISTICS
PROJ_MEMO_MB = 64.0  # engine.features.projection.Projector's matrices kept per projection key
CANDIDATE_PROJ_DIMS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs of the model, read on the meta device.

    base_params: the base model's parameters (tied weights once); weight_bytes: their bytes as the run loads them;
    blocks: every LoRA matrix as (name, out, in), in module order (one gradient block each, width out x in);
    act_bytes_per_token: saved activations per token of a differentiated pass (with footprint's margin)."""

    name: str
    base_params: int
    weight_bytes: int
    blocks: tuple[tuple[str, int, int], ...]
    act_bytes_per_token: int
    hidden: int
    layers: int
    vocab: int

    @property
    def lora_params(self) -> int:
        return sum(o * i for _, o, i in self.blocks)

    @property
    def widths(self) -> list[int]:
        return [o * i for _, o, i in self.blocks]


@dataclass
class Stage:
    """One stage's predicted peak: ``parts`` (what it holds, MB) add up to ``host_mb``; ``gpu_mb`` on CUDA."""

    name: str
    parts: dict[str, float]
    gpu_parts: dict[str, float] = field(default_factory=dict)

    @property
    def host_mb(self) -> float:
        return sum(self.parts.values())

    @property
    def gpu_mb(self) -> float:
        return sum(self.gpu_parts.values())


@dataclass
class Plan:
    """The prediction for one spec; :func:`format_plan` prints it, :meth:`to_dict` is the ``--json`` form."""

    spec_name: str
    device: str
    model: ModelShape
    n_train: int
    n_test: int
    tokens: int  # the longest sample's tokens (what a batch pads to)
    lengths_from: str  # "tokenizer" or "max_length" (no tokenizer beside the config)
    grad_batch: int
    micro_batch: int
    stages: list[Stage]
    disk: dict[str, float]
    budget_mb: float
    gpu_budget_mb: float | None
    proposals: dict[str, int]
    notes: list[str]

    @property
    def peak_mb(self) -> float:
        return max(s.host_mb for s in self.stages)

    @property
    def peak_gpu_mb(self) -> float:
        return max((s.gpu_mb for s in self.stages), default=0.0)

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def to_dict(self) -> dict:
        return {"spec": self.spec_name, "device": self.device, "model": self.model.name,
                "base_params": self.model.base_params, "lora_params": self.model.lora_params,
                "n_train": self.n_train, "n_test": self.n_test, "tokens": self.tokens,
                "lengths_from": self.lengths_from, "grad_batch_size": self.grad_batch,
                "micro_batch_size": self.micro_batch,
                "stages": {s.name: {"host_mb": round(s.host_mb, 1), "gpu_mb": round(s.gpu_mb, 1),
                                    "parts": {k: round(v, 1) for k, v in s.parts.items()},
                                    "gpu_parts": {k: round(v, 1) for k, v in s.gpu_parts.items()}}
                           for s in self.stages},
                "peak_mb": round(self.peak_mb, 1), "peak_gpu_mb": round(self.peak_gpu_mb, 1),
                "disk_mb": {k: round(v, 1) for k, v in self.disk.items()},
                "budget_mb": round(self.budget_mb, 1),
                "gpu_budget_mb": None if self.gpu_budget_mb is None else round(self.gpu_budget_mb, 1),
                "proposals": self.proposals, "notes": self.notes}


# ------------------------------------------------------------------------------------------------ the model
def model_shape(spec: RunSpec) -> ModelShape:
    """The model's shapes from its configuration, on the meta device (no weights read, nothing downloaded)."""
    cfg = base_config(spec.model.name, trust_remote_code=spec.model.trust_remote_code)
    dtype = torch.bfloat16 if spec.dtype == "bfloat16" else torch.float32
    model = meta_model(cfg, dtype, trust_remote_code=spec.model.trust_remote_code)
    params = {id(p): p for p in model.parameters()}  # tied weights once
    base_params = sum(p.numel() for p in params.values())
    weight_bytes = _weight_bytes(model, spec.model.load_in, dtype)
    if spec.model.adapter:  # the user's adapter: its own configuration, checked as a run checks it
        peft_model = adapters.attach(model, adapters.find_adapter(spec.model.adapter, spec.model.checkpoints), 0)
    else:
        peft_model = add_lora(model, spec.lora, seed=0)
    blocks = []
    for name, mod in peft_model.named_modules():
        for part in ("lora_A", "lora_B"):
            if name.endswith(f".{part}.default") and isinstance(mod, torch.nn.Linear):
                blocks.append((name, mod.out_features, mod.in_features))
    text = getattr(cfg, "get_text_config", lambda: cfg)()
    act_bytes = 2 if dtype == torch.bfloat16 or spec.model.load_in != "none" else 4
    return ModelShape(spec.model.name, base_params, weight_bytes, tuple(blocks),
                      activation_bytes_per_token(cfg, act_bytes), int(text.hidden_size),
                      int(text.num_hidden_layers), int(getattr(text, "vocab_size", 0) or 0))


def _weight_bytes(model, load_in: str, dtype: torch.dtype) -> int:
    """Bytes of the base weights as loaded: the dtype's, or bitsandbytes' for the linear layers' weights."""
    if load_in == "none":
        seen = {id(p): p for p in model.parameters()}
        return sum(p.numel() * torch.empty(0, dtype=dtype).element_size() for p in seen.values())
    per_linear = 0.5 + 1 / 64 if load_in == "4bit" else 1.0  # NF4 with double-quantized absmax (~0.51 byte)
    out_emb = model.get_output_embeddings()  # bitsandbytes leaves the LM head (and a tied embedding) in bfloat16
    linear = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not out_emb}
    total = 0.0
    for p in {id(p): p for p in model.parameters()}.values():
        total += p.numel() * (per_linear if id(p) in linear else 2)  # the rest in bfloat16
    return int(total)


# ------------------------------------------------------------------------------------------------- the stages
def plan_run(spec: RunSpec, *, device: str | None = None, memory_gb: float | None = None,
             gpu_memory_gb: float | None = None) -> Plan:
    """Predict ``spec``'s peaks and disk; propose batch, shard and projection sizes for the budget.

    device: "cpu" or "cuda" (default: the spec's device; "auto" plans for the CPU unless a GPU is here);
    memory_gb: host memory to fit (default: this machine's); gpu_memory_gb: the GPU's (needed with cuda when no
    GPU is visible here)."""
    runtime_mb()  # measured first, before this process builds anything of its own
    device = device or spec.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise InputError(f"--device must be cpu or cuda, got {device!r}")
    for flag, value in (("--memory-gb", memory_gb), ("--gpu-memory-gb", gpu_memory_gb)):
        if value is not None and not value > 0:
            raise InputError(f"{flag} must be > 0, got {value}")
    gpu = device == "cuda"
    budget = memory_gb * 1024 if memory_gb else _host_memory_mb()
    gpu_budget = None
    if gpu:
        if gpu_memory_gb:
            gpu_budget = gpu_memory_gb * 1024
        elif torch.cuda.is_available():
            gpu_budget = torch.cuda.get_device_properties(0).total_memory / MB
        else:
            raise InputError("planning for --device cuda on a machine without a GPU: give --gpu-memory-gb")
    shape = model_shape(spec)
    task = load_data(spec)
    methods = run_methods(spec)
    fplan = feature_plan(spec, methods)
    tokens, lengths_from = _longest_sample(spec, task)
    n, m = len(task.train), len(task.test)
    notes = [] if lengths_from == "tokenizer" else [
        f"no tokenizer beside the model's configuration: samples taken as {tokens} tokens (train.max_length)"]
    # the batch sizes the run will take (engine.pipeline.stages.grad_batch_size, finetune.micro_batch_size)
    grad_batch = spec.scoring.grad_batch_size or batch_for_bytes(shape.act_bytes_per_token, spec.train.max_length)
    micro = (min(spec.train.micro_batch_size, spec.train.batch_size) if spec.train.micro_batch_size
             else min(spec.train.batch_size, batch_for_bytes(shape.act_bytes_per_token, tokens)))
    stages = _stages(spec, shape, fplan, [mm.name for mm in methods], n, m, tokens, grad_batch, micro, gpu)
    disk = _disk(spec, shape, fplan, [mm.name for mm in methods], n, m)
    plan = Plan(spec.name, device, shape, n, m, tokens, lengths_from, grad_batch, micro, stages, disk, budget,
                gpu_budget, {}, notes)
    plan.proposals = _proposals(spec, shape, fplan, [mm.name for mm in methods], n, m, tokens, gpu, budget,
                                gpu_budget, plan)
    return plan


def _longest_sample(spec: RunSpec, task) -> tuple[int, str]:
    """The longest training sample's tokens (what fine-tuning's micro-batches are sized for, and what a gradient
    batch pads to at most), and where the lengths came from."""
    tok = load_tokenizer(spec.model.name, trust_remote_code=spec.model.trust_remote_code)
    if tok is None:
        return spec.train.max_length, "max_length"
    data = encode_data(task, tok, spec.train)
    return max(len(e.input_ids) for e in data.train), "tokenizer"


def _stages(spec: RunSpec, s: ModelShape, fplan: FeaturePlan, methods: list[str], n: int, m: int, tokens: int,
            grad_batch: int, micro: int, gpu: bool) -> list[Stage]:
    P, D = s.lora_params, s.lora_params
    base = {"runtime": runtime_mb(), "weights": s.weight_bytes / MB}
    on_gpu = {"weights": s.weight_bytes / MB} if gpu else {}
    host_base = {"runtime": runtime_mb()} if gpu else dict(base)

    def split(compute: dict[str, float], held: dict[str, float]) -> tuple[dict, dict]:
        """Compute-side parts go to the GPU on CUDA (with the weights, which stay there for the whole run), to the
        host otherwise; held parts (shards, statistics, scores: the methods run on the host) stay on the host."""
        if gpu:
            return host_base | held, on_gpu | compute
        return base | compute | held, {}

    # on the CPU the weights are mapped from their safetensors file and become resident as the first pass touches
    # them (SmolLM2: 561 MB measured at load, 1,010 MB once fine-tuning ran): load holds the runtime
    stages = [Stage("load", {"runtime": runtime_mb()}, on_gpu)] if not gpu else [Stage("load", *split({}, {}))]
    epochs = spec.train.epochs
    if not spec.model.adapter:
        stages.append(Stage("finetune", *split(
            {"adapter training state (weights, grads, AdamW)": 16 * P / MB,
             "activations (micro-batch)": s.act_bytes_per_token * micro * tokens / MB,
             "LM head chunks": head_mb(s.vocab, micro * tokens)},
            {"recorded adapter states": 4 * P * (epochs + 1) / MB})))
    shard = min(spec.scoring.shard_size, n)
    scored = list(range(1, epochs + 1)) if spec.scoring.checkpoints == "all" else [epochs]
    kfac_mb = _kfac_mb(s, shared=True) if fplan.kfac else 0.0
    proj = {k: _proj_width(s, k[0]) for k in fplan.projections}
    # a training shard streams into its file a batch at a time (engine.features.stage.stream_train_shard): its
    # gradients are not held; its projections are, until the shard is written
    features = {"test gradients": 4 * D * m / MB}
    pass_parts = {"activations (gradient batch)": s.act_bytes_per_token * grad_batch * tokens / MB,
                  "LM head chunks": head_mb(s.vocab, grad_batch * tokens), "batch gradients": 2 * 4 * D * grad_batch / MB}
    if kfac_mb:
        # the shard's own sums, on the pass's device while it runs (the totals, read after it, are no larger)
        pass_parts["K-FAC factor sums"] = kfac_mb
    for k, width in proj.items():
        matrices = 4 * sum(min(k[0], w) * w for w in s.widths if w > k[0]) / MB  # kept whole when the shard
        features[f"projection {k[0]}"] = (min(PROJ_MEMO_MB, matrices) if fplan.keep_train_grads  # is projected
                                          else matrices) + 4 * width * shard / MB          # per batch
    stages.append(Stage("features", *split(pass_parts, features)))
    # scoring: what every method's stage holds (the cached tensors, one shard read, the test side, K-FAC sums),
    # plus the statistics the methods before it kept (TrainData.memo, the eigenbases: kept for the methods after
    # it, self-influence and the query index)
    cached = min(spec.scoring.feature_memory_mb, 4 * D * n / MB)
    held = {"cached features": cached, "test gradients": 4 * D * m / MB}
    if kfac_mb:
        held["K-FAC factor sums"] = kfac_mb
    per_method, kept = _method_parts(spec, s, fplan, methods, n, m, shard, scored, held)
    for name, parts in per_method:
        stages.append(Stage(f"score_{name}", *split({}, parts)))
    stages.append(Stage("metrics", *split({}, held | kept | {"score matrices (two at a time)": 2 * 8 * n * m / MB})))
    # the kept statistics are released before the checks unless the query index saves them (engine.pipeline.run)
    after = held | (kept if spec.scoring.query_index else {})
    if spec.checks.enabled:  # the padding check: a gradient pass over checks.samples samples in one batch
        k = spec.checks.samples
        stages.append(Stage("checks", *split({"activations (check batch)": s.act_bytes_per_token * k * tokens / MB,
                                              "LM head chunks": head_mb(s.vocab, k * tokens)}, after)))
    return stages


def _method_parts(spec: RunSpec, s: ModelShape, fplan: FeaturePlan, methods: list[str], n: int, m: int, shard: int,
                  scored: list[int], held: dict[str, float]) -> tuple[list[tuple[str, dict]], dict[str, float]]:
    """What each method's stage holds on the host (``held``, the shard it reads, its queries, the statistics kept
    so far: ``Method.keeps``, freed early where ``releases_early``), and the statistics still kept after the
    last (until the checks, or for the query index)."""
    D, widest, out = s.lora_params, max(s.widths), []
    kept: dict[str, float] = {}
    early = releases_early(spec)
    for i, name in enumerate(methods):
        if early:  # what no method from this one on keeps is freed before it (engine.pipeline.run)
            later = set().union(*(get_method(x).keeps for x in methods[i:]))
            kept = {k: v for k, v in kept.items() if _KEPT_FAMILY[k] in later}
        parts = held | kept | {"score matrix": 8 * n * m / MB}
        keeps = get_method(name).keeps
        if name in _GRADIENT_METHODS:
            # TracIn reads the shard and the queries at every checkpoint it sums over (the scored one included)
            times = len(fplan.checkpoints(scored)) if name == "tracin" else 1
            parts["one shard read"] = times * 4 * D * shard / MB
            parts["queries (float64)"] = times * 8 * D * m / MB
        if "gram" in keeps:
            kept["Gram factors kept"] = min(GRAM_MEMO_BYTES / MB, 8 * sum(min(n, w) * w for w in s.widths) / MB)
            parts["Gram factors kept"] = kept["Gram factors kept"]
            parts["Gram factor of one block"] = 8 * min(n, widest) * widest / MB
        if "kronecker" in keeps:
            kept["eigenbases"] = _eigen_mb(s)
            parts["eigenbases"] = kept["eigenbases"]
        if name.endswith("_proj"):
            parts["projected features"] = 4 * _proj_width(s, spec.scoring.proj_dim) * n / MB
        out.append((name, parts))
    return out, ({} if early else kept)  # early: the last method's are freed with it


def _kfac_mb(s: ModelShape, shared: bool = False) -> float:
    """The K-FAC factor sums of every block, float64: [in, in] and [out, out] each. ``shared``: as held for
    scoring, where the blocks fed one input (the lora_A blocks of one attention or MLP module) share one
    activation factor (engine.features.cache.kfac_totals)."""
    return 8 * sum(w * w for w in _factor_widths(s, shared)) / MB


def _eigen_mb(s: ModelShape) -> float:
    """K-FAC / EK-FAC eigenbases: one float64 eigenvector matrix per distinct factor, and the float64 copy of the
    largest factor while it is decomposed."""
    widths = _factor_widths(s, shared=True)
    return 8 * (sum(w * w for w in widths) + max(widths) ** 2) / MB


def _factor_widths(s: ModelShape, shared: bool) -> list[int]:
    """The side of every K-FAC factor: per block its gradient factor [out, out] and activation factor [in, in];
    ``shared``: the lora_A blocks of layers that read one input (q/k/v of an attention, gate/up of an MLP)
    counted once."""
    out, seen = [], set()
    for name, o, i in s.blocks:
        out.append(o)
        parent, layer = name.split(".lora_")[0].rsplit(".", 1)  # e.g. "...layers.0.self_attn", "q_proj"
        key = (parent, _SAME_INPUT.get(layer, layer)) if shared and ".lora_A" in name else (name,)
        if key not in seen:
            seen.add(key)
            out.append(i)
    return out


def _proj_width(s: ModelShape, k: int) -> int:
    """Values per sample after projecting every block to min(k, d_l)."""
    return sum(min(k, w) for w in s.widths)


def _disk(spec: RunSpec, s: ModelShape, fplan: FeaturePlan, methods: list[str], n: int, m: int) -> dict[str, float]:
    """The feature cache's files, the run folder's score files and the query index, in MB."""
    D = s.lora_params
    epochs = spec.train.epochs
    scored = list(range(1, epochs + 1)) if spec.scoring.checkpoints == "all" else [epochs]
    computed = fplan.checkpoints(scored)
    shards = len(shard_bounds(n, spec.scoring.shard_size))
    per_train = 4 * (s.hidden + 1)  # reps and loss
    if fplan.keep_train_grads:
        per_train += 4 * D
    per_train += sum(4 * _proj_width(s, k[0]) for k in fplan.projections)
    per_ckpt = per_train * n + 4 * (D + s.hidden + 1) * m + (shards * _kfac_mb(s) * MB if fplan.kfac else 0)
    history_only = [c for c in computed if c not in scored]
    cache = per_ckpt * (len(computed) - len(history_only)) + 4 * (D + s.hidden + 1) * (n + m) * len(history_only)
    cache += 4 * s.lora_params * (epochs + 1)  # states.safetensors
    scores = 12 * n * m * len(methods) * len(scored)  # parquet rows: test id, train id, float32 score
    out = {"feature cache": cache / MB, "score files": scores / MB}
    if spec.scoring.query_index:
        out["query index (hard links while the cache is kept)"] = per_ckpt / MB
    return out


# ------------------------------------------------------------------------------------------------ proposals
def _proposals(spec: RunSpec, s: ModelShape, fplan: FeaturePlan, methods: list[str], n: int, m: int, tokens: int,
               gpu: bool, budget: float, gpu_budget: float | None, plan: Plan) -> dict[str, int]:
    """The largest sizes that fit: a gradient batch and micro-batch whose stage's peak (the GPU's on CUDA) stays
    under 90 % of the budget (0: not even one sample fits), a shard whose gradients take at most a quarter of the
    host budget, and a projection dimension whose projected training features take at most a quarter of it."""
    limit = 0.9 * (gpu_budget if gpu else budget)

    def largest(stage: str, batches) -> int:
        for b in range(MAX_AUTO_BATCH, 0, -1):
            st = next(x for x in _stages(spec, s, fplan, methods, n, m, tokens, *batches(b), gpu) if x.name == stage)
            if (st.gpu_mb if gpu else st.host_mb) <= limit:
                return b
        return 0

    out = {"grad_batch_size": largest("features", lambda b: (b, plan.micro_batch))}
    if not spec.model.adapter:
        out["micro_batch_size"] = min(spec.train.batch_size, largest("finetune", lambda b: (plan.grad_batch, b)))
    out["shard_size"] = max(1, min(n, int(budget / 4 * MB // (4 * s.lora_params))))
    out["proj_dim"] = max((k for k in CANDIDATE_PROJ_DIMS if 4 * _proj_width(s, k) * n <= budget / 4 * MB),
                          default=0)
    return out


def _host_memory_mb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / MB
    except (ValueError, OSError, AttributeError):
        return 16 * 1024.0


# --------------------------------------------------------------------------------------------------- printing
def format_plan(plan: Plan) -> str:
    """The plan as text: the setting, each stage's peak and what makes it, disk, the proposals."""
    s = plan.model
    lines = [f"plan for {plan.spec_name!r} on {plan.device}: model {s.name} ({s.base_params / 1e6:,.1f}M parameters, "
             f"{s.weight_bytes / MB:,.0f} MB of weights), {len(s.blocks)} LoRA blocks ({s.lora_params:,} values = "
             f"{4 * s.lora_params / MB:,.2f} MB per sample's gradient)",
             f"data: {plan.n_train:,} training × {plan.n_test:,} test samples, longest {plan.tokens} tokens "
             f"({plan.lengths_from}); gradient batch {plan.grad_batch}, fine-tuning micro-batch {plan.micro_batch}",
             "", f"{'stage':<22} {'host MB':>9}" + (f" {'GPU MB':>9}" if plan.device == "cuda" else "")
             + "  largest parts"]
    for st in plan.stages:
        parts = sorted({**st.parts, **{f"{k} (GPU)": v for k, v in st.gpu_parts.items()}}.items(),
                       key=lambda kv: -kv[1])
        top = ", ".join(f"{k} {v:,.0f}" for k, v in parts[:4] if v >= 0.5)
        gpu = f" {st.gpu_mb:>9,.0f}" if plan.device == "cuda" else ""
        lines.append(f"{st.name:<22} {st.host_mb:>9,.0f}{gpu}  {top}")
    lines.append(f"{'peak':<22} {plan.peak_mb:>9,.0f}" + (f" {plan.peak_gpu_mb:>9,.0f}" if plan.device == "cuda"
                                                        else ""))
    lines += ["", "disk: " + ", ".join(f"{k} {v:,.0f} MB" for k, v in plan.disk.items())]
    budget = f"host budget {plan.budget_mb / 1024:,.1f} GB" + (
        f", GPU budget {plan.gpu_budget_mb / 1024:,.1f} GB" if plan.gpu_budget_mb is not None else "")
    fits = plan.peak_mb <= plan.budget_mb and (plan.gpu_budget_mb is None or plan.peak_gpu_mb <= plan.gpu_budget_mb)
    lines += ["", f"{budget}: the run {'fits' if fits else 'does NOT fit'}"]
    p = plan.proposals
    if p.get("grad_batch_size", 1) == 0 or p.get("micro_batch_size", 1) == 0:
        lines.append("  even one sample per batch does not fit: a smaller max_length, a quantized base "
                     "(model.load_in) or a larger machine")
    lines.append("proposed: " + ", ".join(f"{k} {v}" for k, v in p.items() if v)
                 + "  (scoring.grad_batch_size, train.micro_batch_size, scoring.shard_size, scoring.proj_dim)")
    lines += [f"note: {x}" for x in plan.notes]
    return "\n".join(lines)
