"""One prepared check for a lent GPU machine, and its CPU dry run (CI): every step of a real 7B-shaped workload,
one table at the end, inside a time limit.

    .venv/bin/python -m bench.gpu_check                 # on the GPU machine (CUDA, bf16)
    .venv/bin/python -m bench.gpu_check --dry-run       # the same steps on CPU, tiny shapes (tests/bench)

A GPU session is short and rare, so the script must not die on the first thing that breaks: every step runs in
its own guard, a failure becomes its row ("FAILED: ..."), the steps after it still run (those that need its
result say so), and the exit status is non-zero when any step failed or the whole run went over ``--time-limit``.
The dry run takes exactly the same code paths with a tiny configuration, so a GPU run can only fail for a reason
that needs the GPU to show.

The steps (the engine's own code: ``engine.model.finetune``, ``engine.features.grads.sample_features``,
``engine.scoring.methods.score_in_shards``, ``engine.pipeline.run.run_pipeline``):

- ``matmul``: the device's dense matmul rate (bf16 on CUDA, float32 on CPU), the reference of every FLOP share;
- ``build model``: a Llama-2-7B-shaped ``LlamaForCausalLM`` (32 layers, hidden 4096, MLP 11008, vocab 32000) from a
  ``transformers.LlamaConfig`` with random bf16 weights (nothing is downloaded), LoRA r=8 on q_proj/v_proj (float32);
- ``finetune``: a few LoRA steps at sequence length 128, the largest batch that fits (halved on OOM);
- ``grads``: per-sample LoRA gradients of n_train + n_test samples, the batch halved on OOM;
- ``kfac factors``: the same pass over the training samples collecting the K-FAC factor sums (EK-FAC reads them);
- ``datainf``, ``gradsim``, ``gradsim_proj`` and, last, ``ekfac``: scores of n_test × n_train, shard by shard;
- ``pipeline cuda vs cpu``: the tiny demo run (no analyses) on CUDA and on CPU in float32, scores equal to 1e-4
  relative (the dry run compares two CPU runs: determinism);
- ``query``: one live query through ``engine.query.api.ask`` against that run, when that module exists;
- ``torchrun``: ``torchrun --nproc_per_node 1`` of a child that joins the process group (nccl on CUDA, gloo on
  CPU), checks an all_reduce and runs the tiny pipeline. With one process the engine itself takes its
  one-process path (``engine.features.distributed.from_environment``), so the collective is checked directly.

Columns: seconds; peak memory of the step (GPU memory on CUDA; peak RSS of the process on CPU, reset per step
through ``/proc/self/clear_refs``); the achieved FLOP rate of the step's timed part (after its batch search and
warm-up) as a share of the ``matmul`` row's rate, from a count of its matmul FLOPs (forward 2·P·tokens, backward to
the activations as much again, no frozen-weight gradients; "-" where no honest count exists). The dry run uses one
CPU thread: tiny shapes gain nothing from more, and spinning threads stall on a shared CI machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import inspect
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.parquet as pq
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from engine.data.encoding import Encoded
from engine.features.distributed import from_environment, shutdown
from engine.features.grads import lora_blocks, sample_features
from engine.features.types import Features
from engine.model.finetune import add_lora, finetune
from engine.pipeline.run import run_pipeline
from engine.scoring.methods import score_in_shards
from engine.spec.presets import demo_spec
from engine.spec.run_spec import LoraSpec, ScoringSpec, TaskSpec, TrainSpec

REPO = Path(__file__).resolve().parents[1]
SCORING = ("datainf", "ekfac", "gradsim", "gradsim_proj")
# The rows of the table, in order, and each step's share of the time limit (its budget) on the GPU and in the
# dry run (where the torchrun child's start-up and the tiny runs are most of the time). EK-FAC goes last: its
# eigendecompositions at 7B width are the one cost nobody has measured yet, and it must not starve the others.
BUDGET = {"matmul": 0.02, "build model": 0.04, "finetune": 0.10, "grads": 0.12, "kfac factors": 0.10,
          "datainf": 0.04, "gradsim": 0.02, "gradsim_proj": 0.04, "pipeline cuda vs cpu": 0.14, "query": 0.03,
          "torchrun": 0.10, "ekfac": 0.25}
DRY_BUDGET = {"matmul": 0.01, "build model": 0.03, "finetune": 0.05, "grads": 0.05, "kfac factors": 0.05,
              "datainf": 0.02, "gradsim": 0.01, "gradsim_proj": 0.02, "pipeline cuda vs cpu": 0.25, "query": 0.02,
              "torchrun": 0.44, "ekfac": 0.05}
STEPS = tuple(BUDGET)
CHILD_TAG = "GPU_CHECK_CHILD "


@dataclass(frozen=True)
class Shape:
    """The workload: model shape, samples, starting batch sizes (halved on OOM on CUDA) and the time limit."""

    layers: int
    hidden: int
    heads: int
    mlp: int
    vocab: int
    seq: int
    n_train: int
    n_test: int
    ft_batch: int
    ft_steps: int
    grad_batch: int
    proj_dim: int
    time_limit: float
    task: TaskSpec = TaskSpec(name="grammars", n_train_per_label=6, n_test_per_label=3)
    epochs: int = 2


# Llama-2-7B: 32 layers, hidden 4096, 32 heads, MLP 11008, vocab 32000; 1k × 100 scores at length 128
# time limit: a lent GPU session has ~15 device minutes, start-up included; two runs of this must fit
GPU_SHAPE = Shape(32, 4096, 32, 11008, 32000, 128, 1000, 100, ft_batch=128, ft_steps=3, grad_batch=256,
                  proj_dim=128, time_limit=300)
# dry run: ~35 s on an idle 2-core machine, most of it two Python start-ups under torchrun; 90 s leaves room for a
# machine that other jobs share
DRY_SHAPE = Shape(2, 64, 4, 128, 512, 32, 48, 8, ft_batch=4, ft_steps=2, grad_batch=8, proj_dim=16,
                  time_limit=90, task=TaskSpec(name="grammars", n_train_per_label=1, n_test_per_label=1), epochs=1)


@dataclass
class Done:
    """What a step reports: FLOPs of its timed part (None: no honest count), the seconds of that part (None: the
    whole step), a note for the table, and the peak memory when it was another process's."""

    flops: float | None = None
    timed: float | None = None
    note: str = ""
    peak: int | None = None


@dataclass
class Row:
    step: str
    seconds: float = 0.0
    peak: int | None = None  # bytes
    flops: float | None = None
    note: str = ""
    failed: bool = False
    share: float | None = None  # of the matmul step's FLOP rate


@dataclass
class State:
    """What the steps hand on to each other."""

    shape: Shape
    device: torch.device
    dtype: torch.dtype
    rate: float = float("nan")  # FLOP/s of the matmul step
    model: torch.nn.Module | None = None
    data: list[Encoded] = field(default_factory=list)
    train: Features | None = None
    test: Features | None = None
    run_folder: Path | None = None
    grad_batch: int | None = None  # the batch size the grads step found
    tmp: Path = Path(".")


# ---------------------------------------------------------------------------------------------- measuring


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: torch.device) -> None:
    """Start a step's peak-memory window: CUDA's allocator counter, or the kernel's peak RSS (clear_refs 5)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # then the peak is the process's since its start (ru_maxrss)


def _peak(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated())
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def largest_batch(try_batch: Callable[[int], None], start: int, device: torch.device) -> int:
    """The largest of start, start/2, ..., 1 for which ``try_batch`` runs; halving on CUDA out-of-memory only (on
    CPU the first size is taken as it is: there is no allocator limit to find)."""
    b = start
    while True:
        try:
            try_batch(b)
            return b
        except (torch.cuda.OutOfMemoryError, RuntimeError) as e:
            if device.type != "cuda" or not _is_oom(e) or b == 1:
                raise
        # outside the except block: the traceback (and the tensors its frames hold) is gone
        gc.collect()
        torch.cuda.empty_cache()
        b //= 2


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, reps: int) -> tuple[float, float]:
    """(FLOP/s, seconds) of an n×n matmul in ``dtype``, the best of ``reps`` after a warm-up."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best, best


# ---------------------------------------------------------------------------------------------- the model


def linear_params(model) -> tuple[int, int]:
    """(weights of every base linear layer but the LM head, weights of the LM head): the matmul FLOP counts."""
    head = model.get_base_model().get_output_embeddings() if hasattr(model, "get_base_model") else None
    body = sum(m.weight.numel() for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and m is not head and ".lora_" not in n)
    return body, (head.weight.numel() if head is not None else 0)


def build_model(shape: Shape, device: torch.device, dtype: torch.dtype):
    """The LoRA-wrapped random Llama of ``shape`` on ``device``; the LoRA B matrices drawn nonzero so that every
    block's gradient is nonzero even if the fine-tuning step failed."""
    cfg = LlamaConfig(vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.mlp,
                      num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                      num_key_value_heads=shape.heads, max_position_embeddings=max(2 * shape.seq, 256),
                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in its dtype: a 7B float32 copy would need 27 GB first
    try:
        with torch.device(device), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(before)
    model = add_lora(model, LoraSpec(r=8, alpha=16, dropout=0.0, target_modules=("q_proj", "v_proj")), seed=0)
    model = model.to(device)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    return model.eval()


def random_samples(shape: Shape, n: int) -> list[Encoded]:
    """Token sequences of length ``seq``, loss on the second half (a prompt, then its response)."""
    g = torch.Generator().manual_seed(0)
    half = shape.seq // 2
    out = []
    for _ in range(n):
        ids = torch.randint(3, shape.vocab, (shape.seq,), generator=g).tolist()
        out.append(Encoded(tuple(ids), tuple([-100] * half + ids[half:]), half))
    return out


# ---------------------------------------------------------------------------------------------- the steps
# Each step takes the State and returns a Done; Skip is a skip (said in the row), any other error a failure.


class Skip(Exception):
    """A step that cannot run here (no query module, an earlier step failed): its row says why; not a failure."""


def _need(value, what: str):
    if value is None:
        raise Skip(f"skipped: needs {what}")
    return value


def step_matmul(st: State):
    n, reps = (8192, 10) if st.device.type == "cuda" else (512, 5)
    st.rate, _ = matmul_rate(st.device, st.dtype, n, reps)  # the reference: no share of itself
    return Done(note=f"{n}×{n} {str(st.dtype).removeprefix('torch.')}, best of {reps}: {st.rate / 1e12:.3f} TFLOP/s")


def step_build(st: State):
    st.model = build_model(st.shape, st.device, st.dtype)
    st.data = random_samples(st.shape, max(st.shape.n_train + st.shape.n_test, st.shape.ft_batch))
    params = sum(p.numel() for p in st.model.parameters())
    d = sum(m.weight.numel() for _, m in lora_blocks(st.model))
    return Done(note=f"{params / 1e6:,.1f} M params, {st.shape.layers} layers, LoRA r=8 q/v: {d:,} params")


def step_finetune(st: State):
    model, shape, dev = _need(st.model, "the model"), st.shape, st.device

    def train_steps(b, n_steps):
        data = [st.data[i % len(st.data)] for i in range(b * n_steps)]
        cfg = TrainSpec(epochs=1, batch_size=b, lr=1e-4, max_length=shape.seq, max_grad_norm=0.0)
        finetune(model, data, 0, cfg, dev, progress=False)

    b = largest_batch(lambda b: train_steps(b, 1), shape.ft_batch, dev)  # also the warm-up
    _sync(dev)
    t = time.perf_counter()
    train_steps(b, shape.ft_steps)
    _sync(dev)
    timed = time.perf_counter() - t
    body, head = linear_params(model)
    tokens = b * shape.ft_steps * shape.seq
    flops = 4 * (body + head) * tokens  # forward, backward to the activations (logits at every position)
    return Done(flops, timed, f"batch {b} (largest that fits), {shape.ft_steps} steps × {b * shape.seq} tokens: "
                              f"{timed:.2f} s")


def _grad_flops(model, data: list[Encoded]) -> float:
    """Forward (the LM head only where a loss is taken), backward to the activations, the per-sample einsum."""
    body, head = linear_params(model)
    tokens = sum(len(s.input_ids) for s in data)
    loss_tokens = sum(sum(1 for y in s.labels[1:] if y != -100) for s in data)
    d = sum(m.weight.numel() for _, m in lora_blocks(model))
    return 2 * (2 * body * tokens + 2 * head * loss_tokens) + 2 * d * tokens


def step_grads(st: State):
    model, shape, dev = _need(st.model, "the model"), st.shape, st.device
    n = shape.n_train + shape.n_test
    data = st.data[:n]
    b = largest_batch(lambda b: sample_features(model, data[:b], 0, dev, b, progress=False), shape.grad_batch, dev)
    _sync(dev)
    t = time.perf_counter()
    feats = sample_features(model, data, 0, dev, b, progress=False)
    _sync(dev)
    timed = time.perf_counter() - t
    cut = shape.n_train
    st.train = Features(grads=[g[:cut] for g in feats.grads], block_names=feats.block_names)
    st.test = Features(grads=[g[cut:] for g in feats.grads], block_names=feats.block_names)
    st.grad_batch = b
    return Done(_grad_flops(model, data), timed, f"batch {b}, {n} samples × {shape.seq} tokens: {timed:.2f} s = "
                                                 f"{1000 * timed / n:.1f} s per 1k samples")


def _kfac_flops(model, tokens: int, shared: bool) -> float:
    """The factor sums: Σ x xᵀ per distinct input and Σ dy dyᵀ per block. ``shared``: q/k/v's lora_A read one
    input tensor, summed once (float32 bases; over a bf16 base peft casts it to float32 anew for each)."""
    seen, flops = set(), 0
    for name, m in lora_blocks(model):
        parts = name.split(".")
        qkv = shared and parts[-1] == "lora_A" and parts[-2] in ("q_proj", "k_proj", "v_proj")
        key = ".".join(parts[:-2] + ["qkv"]) if qkv else name
        if key not in seen:
            seen.add(key)
            flops += 2 * m.in_features**2 * tokens
        flops += 2 * m.out_features**2 * tokens
    return flops


def step_kfac(st: State):
    model, shape, dev = _need(st.model, "the model"), st.shape, st.device
    train = _need(st.train, "the gradients")
    data = st.data[:shape.n_train]
    # the factor sums take device memory of their own (two [4096, 4096] float64 per block at 7B): search again
    b = largest_batch(lambda b: sample_features(model, data[:b], 0, dev, b, progress=False, kfac=True),
                      st.grad_batch or shape.grad_batch, dev)
    _sync(dev)
    t = time.perf_counter()
    feats = sample_features(model, data, 0, dev, b, progress=False, kfac=True)
    _sync(dev)
    timed = time.perf_counter() - t
    st.train = replace(train, kfac=feats.kfac)
    flops = _grad_flops(model, data) + _kfac_flops(model, sum(len(s.input_ids) for s in data),
                                                   shared=st.dtype == torch.float32)
    return Done(flops, timed, f"batch {b}, {shape.n_train} training samples with the factor sums: {timed:.2f} s")


def _score_flops(method: str, widths: list[int], n: int, m: int, k: int, blocks) -> float:
    """Matmul FLOPs of one scoring call (eigendecompositions not counted)."""
    d = sum(widths)
    if method == "gradsim":
        return 2 * m * n * d
    if method == "datainf":
        return 6 * m * n * d  # C = V Gᵀ, (C/(λ+r)) G, then Q Gᵀ
    if method == "gradsim_proj":
        kd = [min(k, w) for w in widths]
        return 2 * (n + m) * sum(w * c for w, c in zip(widths, kd)) + 2 * m * n * sum(kd)
    rot = sum(2 * o * i * (o + i) for o, i in blocks)  # Q_Sᵀ G Q_A of one sample
    return (n + m) * rot + 2 * m * n * d


def step_score(method: str):
    """The step that scores n_test × n_train with ``method`` through ``score_in_shards`` (4 shards)."""
    def step(st: State):
        train, test = _need(st.train, "the gradients"), _need(st.test, "the gradients")
        if method == "ekfac":
            _need(train.kfac, "the K-FAC factors")
        dev = st.device
        train = replace(train, grads=[g.to(dev) for g in train.grads])
        test = replace(test, grads=[g.to(dev) for g in test.grads])
        params = {"proj_dim": st.shape.proj_dim} if method == "gradsim_proj" else {}
        n, m = train.n, test.n
        _sync(dev)
        t = time.perf_counter()
        parts = [S for _, _, S in score_in_shards(method, train, test, shard_size=max(1, n // 4), **params)]
        _sync(dev)
        timed = time.perf_counter() - t
        S = np.concatenate(parts, axis=1)
        if S.shape != (m, n) or not np.isfinite(S).all():
            raise AssertionError(f"scores {S.shape}, finite: {bool(np.isfinite(S).all())}")
        widths = [g.shape[1] for g in train.grads]
        shapes = [(f.shape[0], a.shape[0]) for f, a in zip(train.kfac.grad, train.kfac.act)] if train.kfac else []
        flops = _score_flops(method, widths, n, m, st.shape.proj_dim, shapes)
        return Done(flops, timed, f"{m}×{n} scores, float64, 4 shards: {timed:.2f} s")
    return step


# ---------------------------------------------------------------------------------------------- whole runs


def query_api():
    """The ask-anything call (``engine.query.api.ask``, or ``engine.query.ask``; built elsewhere) when that module
    exists, else None."""
    for name in ("engine.query.api", "engine.query"):
        try:
            ask = getattr(importlib.import_module(name), "ask", None)
        except ImportError:
            continue
        if callable(ask):
            return ask
    return None


def pipeline_spec(shape: Shape, device: str, name: str):
    """The tiny demo run without its analyses (their retrainings are the CPU's minutes, not the GPU's question), in
    float32; a query index beside it when the query module is there to read it."""
    spec = demo_spec("tiny", "grammars", device=device, name=name, stages=())
    spec = replace(spec, task=shape.task, train=replace(spec.train, epochs=shape.epochs))
    if query_api() is not None and "query_index" in {f.name for f in dataclasses.fields(ScoringSpec)}:
        spec = replace(spec, scoring=replace(spec.scoring, query_index=True))
    return spec


def _scores(folder: Path):
    key = ["method", "checkpoint", "test_id", "train_id"]
    return pq.read_table(folder / "scores").to_pandas().sort_values(key).reset_index(drop=True)


def compare_scores(a_folder: Path, b_folder: Path) -> tuple[float, str, int, int]:
    """(largest relative difference of any method's scores, that method, methods, scores) between two runs of one
    spec; a run that scored other rows is an AssertionError."""
    a, b = _scores(a_folder), _scores(b_folder)
    if len(a) != len(b) or not (a.method.to_numpy() == b.method.to_numpy()).all():
        raise AssertionError(f"the two runs scored different rows ({len(a)} vs {len(b)})")
    worst, where = 0.0, ""
    for method, g in b.groupby("method"):
        want, got = g.score.to_numpy(), a.score[a.method == method].to_numpy()
        rel = float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))
        if rel > worst:
            worst, where = rel, method
    return worst, where, int(a.method.nunique()), len(a)


def step_pipeline(st: State):
    """The tiny run on cuda and on cpu, scores equal to 1e-4 relative; in the dry run cpu twice (the same code path:
    a determinism check)."""
    devices = ("cuda" if st.device.type == "cuda" else "cpu", "cpu")
    folders = [run_pipeline(pipeline_spec(st.shape, dev, f"gpu-check-{dev}-{i}"), st.tmp / f"runs-{i}",
                            progress=False) for i, dev in enumerate(devices)]
    st.run_folder = folders[0]
    worst, where, methods, n = compare_scores(*folders)
    if worst > 1e-4:
        raise AssertionError(f"{devices[0]} vs cpu: scores differ by {worst:.1e} relative ({where}) > 1e-4")
    most = f" ({where})" if where else ""
    return Done(note=f"{devices[0]} vs cpu, {methods} methods, {n} scores: max rel diff {worst:.1e}{most}")


def step_query(st: State):
    ask = query_api()
    if ask is None:
        raise Skip("skipped: engine.query not available")
    folder = _need(st.run_folder, "the pipeline's run")
    params = inspect.signature(ask).parameters
    kwargs = {"prompt": "Reverse the order of the words: the cat sat", "response": "sat cat the"}
    if "k" in params:
        kwargs["k"] = 5
    run = folder  # a run is named within its runs folder, or given as its folder
    if "runs_dir" in params:
        run, kwargs["runs_dir"] = folder.name, folder.parent
    t = time.perf_counter()
    result = ask(run, **kwargs)
    timed = time.perf_counter() - t
    return Done(None, timed, f"engine.query.ask: {len(result)} rows in {timed:.2f} s")


def step_torchrun(st: State, remaining: float):
    """``torchrun --standalone --nproc_per_node 1`` of this module's child mode; its own seconds and peak memory
    come back on a tagged line of its output (a file: a worker that outlives its launcher holds no pipe open)."""
    out = st.tmp / "torchrun"
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m",
           "bench.gpu_check", "--torchrun-child", str(out), "--device", st.device.type,
           "--time-limit", f"{max(remaining, 1):.0f}"] + (["--dry-run"] if st.shape == DRY_SHAPE else [])
    log, err = out / "stdout.txt", out / "stderr.txt"
    with open(log, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=stdout, stderr=stderr, start_new_session=True)
        try:
            proc.wait(timeout=max(remaining, 1))
        except BaseException:  # the timeout, or the time limit's alarm: torchrun stops its worker on SIGTERM
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            raise
    tagged = [ln for ln in log.read_text().splitlines() if ln.startswith(CHILD_TAG)]
    if proc.returncode != 0 or not tagged:
        tail = (err.read_text().strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"torchrun exited {proc.returncode}: {tail}")
    child = json.loads(tagged[-1][len(CHILD_TAG):])
    same = ""
    if st.run_folder is not None:
        worst, where, _, _ = compare_scores(out / "gpu-check-torchrun", st.run_folder)
        if worst > 1e-4:
            raise AssertionError(f"torchrun's run and the pipeline row's differ by {worst:.1e} relative ({where})")
        same = f", its scores = the pipeline row's to {worst:.1e}"
    return Done(None, None, f"{child['backend']}: all_reduce ok, the pipeline in {child['seconds']:.1f} s{same} "
                            f"(memory: the child's)", child["peak"])


def torchrun_child(out: Path, device: str, shape: Shape, limit: float) -> None:
    """Inside torchrun: join the process group, check one all_reduce on the device, run the tiny pipeline. It ends
    itself after ``limit`` seconds (SIGALRM's default action): a worker whose launcher was killed would otherwise
    wait on the launcher's store forever."""
    signal.alarm(max(1, int(limit)))
    use_cuda = device == "cuda"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    backend = "nccl" if use_cuda else "gloo"
    dev = torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")
    torch.distributed.init_process_group(backend=backend)
    try:
        x = torch.ones(4, device=dev)
        torch.distributed.all_reduce(x)
        world = torch.distributed.get_world_size()
        if not torch.equal(x.cpu(), torch.full((4,), float(world))):
            raise AssertionError(f"all_reduce over {world} process(es) gave {x.tolist()}")
        _reset_peak(dev)
        t = time.perf_counter()
        run_pipeline(pipeline_spec(shape, device, "gpu-check-torchrun"), out, progress=False,
                     dist=from_environment(device))
        seconds = time.perf_counter() - t
    finally:
        shutdown()
    print(CHILD_TAG + json.dumps({"backend": backend, "seconds": seconds, "peak": _peak(dev)}), flush=True)


# ---------------------------------------------------------------------------------------------- the table


def _mib(b: int | None) -> str:
    return "-" if b is None else f"{b / 2**20:,.0f} MiB"


class StepTimeout(TimeoutError):
    """Raised inside a step (SIGALRM) when the whole check's time limit runs out."""


def _alarm(_signum, _frame):
    raise StepTimeout("the time limit ran out during this step")


def run_step(name: str, fn: Callable[[State], Done], st: State, budget: float, remaining: float) -> Row:
    """One guarded step: its row, whatever happens (a failure is the row's note, not the end of the run). A step
    still running when the limit (``remaining`` seconds from now) runs out is interrupted (SIGALRM; a long
    kernel or subprocess wait finishes its call first)."""
    _reset_peak(st.device)
    t = time.perf_counter()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, max(remaining, 0.001))
    try:
        done = fn(st)
    except Skip as e:
        return Row(name, time.perf_counter() - t, note=str(e))
    except Exception as e:  # noqa: BLE001 - every failure becomes its row; the GPU run goes on to the next step
        first = (str(e).strip().splitlines() or [""])[0][:160]
        frames = traceback.extract_tb(e.__traceback__)
        where = next((f for f in reversed(frames) if f.name != "_alarm"), frames[-1])
        return Row(name, time.perf_counter() - t, _peak(st.device), note=f"FAILED: {type(e).__name__}: {first} "
                   f"({Path(where.filename).name}:{where.lineno})", failed=True)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    seconds = time.perf_counter() - t
    row = Row(name, seconds, done.peak if done.peak is not None else _peak(st.device), done.flops, done.note)
    timed = done.timed if done.timed is not None else seconds
    if done.flops is not None and timed > 0 and st.rate > 0:
        row.share = done.flops / timed / st.rate
    if seconds > budget:
        row.note += f"; over budget ({seconds:.1f} s > {budget:.1f} s)"
    return row


def table(rows: list[Row]) -> str:
    head = f"{'step':<22}{'seconds':>9}{'peak memory':>14}{'FLOP rate':>11}  note"
    lines = [head, "-" * len(head)]
    for r in rows:
        share = "-" if r.share is None else f"{100 * r.share:.1f} %"
        lines.append(f"{r.step:<22}{r.seconds:>9.2f}{_mib(r.peak):>14}{share:>11}  {r.note}")
    return "\n".join(lines)


def steps(st: State, limit: float, t0: float, budget: dict[str, float]) -> list[Row]:
    """Every step in order; once the time limit is spent, the rest are rows that say so."""
    funcs = {"matmul": step_matmul, "build model": step_build, "finetune": step_finetune, "grads": step_grads,
             "kfac factors": step_kfac, **{m: step_score(m) for m in SCORING}, "pipeline cuda vs cpu": step_pipeline,
             "query": step_query, "torchrun": lambda s: step_torchrun(s, limit - (time.perf_counter() - t0))}
    rows = []
    for name in STEPS:
        if time.perf_counter() - t0 > limit:
            rows.append(Row(name, note=f"FAILED: not run, the time limit of {limit:.0f} s was spent", failed=True))
            continue
        rows.append(run_step(name, funcs[name], st, budget[name] * limit, limit - (time.perf_counter() - t0)))
        if name == "kfac factors":  # the 7B model's memory goes to the scoring steps
            st.model = None
            if st.device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="every step on CPU with a tiny configuration (CI)")
    ap.add_argument("--device", default=None, help="default: cuda, or cpu with --dry-run")
    ap.add_argument("--time-limit", type=float, default=None,
                    help=f"seconds for the whole check (default {GPU_SHAPE.time_limit:.0f}, dry run "
                         f"{DRY_SHAPE.time_limit:.0f}); each step's budget is its share of it")
    ap.add_argument("--torchrun-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # before the first CUDA allocation: fewer fragmentation OOMs after the batch search's failed tries
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    warnings.filterwarnings("ignore")
    shape = DRY_SHAPE if args.dry_run else GPU_SHAPE
    device = torch.device(args.device or ("cpu" if args.dry_run else "cuda"))
    if args.dry_run:  # tiny shapes gain nothing from threads, and spinning threads stall on a shared CI machine
        torch.set_num_threads(1)
    if args.torchrun_child is not None:
        torchrun_child(args.torchrun_child, device.type, shape, args.time_limit or shape.time_limit)
        return 0
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: run with --dry-run (CPU, tiny shapes) or on the GPU machine", file=sys.stderr)
        return 2
    limit = args.time_limit if args.time_limit is not None else shape.time_limit
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    print(f"gpu_check{' --dry-run' if args.dry_run else ''}: {name}, torch {torch.__version__}, {dtype}, "
          f"time limit {limit:.0f} s", flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        rows = steps(State(shape, device, dtype, tmp=Path(tmp)), limit, t0, DRY_BUDGET if args.dry_run else BUDGET)
    total = time.perf_counter() - t0
    print(table(rows))
    failed = [r.step for r in rows if r.failed]
    over = total > limit
    print(f"total {total:.1f} s of {limit:.0f} s; " + (f"failed: {', '.join(failed)}" if failed else "no step failed")
          + ("; OVER THE TIME LIMIT" if over else ""))
    return 1 if failed or over else 0


if __name__ == "__main__":
    sys.exit(main())
