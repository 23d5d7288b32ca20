"""One short GPU check for a lent accelerator machine (see README): everything runs in one process.

    .venv/bin/python -m bench.gpu_check                # on the GPU machine
    .venv/bin/python -m bench.gpu_check --device cpu --layers 2 --hidden 256 --n-train 32 --n-test 4  # smoke

1. The tiny pipeline end to end on the device (the same code path as on CPU), into a temp folder.
2. A Llama-7B-shaped model (32 layers, hidden 4096, 32 heads, MLP 11008, vocab 32000) with random bf16
   weights — nothing is downloaded — with LoRA r=4 on q_proj/v_proj: batched per-sample LoRA gradients at
   sequence length 128, then DataInf scoring of those gradients.
3. The device's measured dense matmul rate, and each step's achieved FLOP rate as a share of it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_rate(device, dtype, n=8192, reps=10) -> float:
    """FLOP/s of an n×n matmul in ``dtype`` (best of ``reps``)."""
    if device.type == "cpu":
        n, reps = 1024, 3
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
    return 2 * n**3 / best


def tiny_pipeline(device) -> float:
    from engine.pipeline.run import run_pipeline
    from engine.spec.load import spec_from_dict

    spec = spec_from_dict({"name": "gpu-check", "device": device.type,
                           "task": {"name": "grammars", "n_train_per_label": 4, "n_test_per_label": 2},
                           "train": {"epochs": 2, "batch_size": 8, "lr": 1e-3, "max_length": 64}})
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        folder = run_pipeline(spec, Path(d), progress=False)
        assert (folder / "manifest.json").is_file()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--mlp", type=int, default=11008)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--n-train", type=int, default=256)
    ap.add_argument("--n-test", type=int, default=32)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")

    print(f"[1] tiny pipeline on {device}: {tiny_pipeline(device):.1f} s")

    from transformers import LlamaConfig, LlamaForCausalLM

    from engine.data.encoding import Encoded
    from engine.features.grads import sample_features
    from engine.features.types import Features
    from engine.model.finetune import add_lora
    from engine.scoring.methods import get_method
    from engine.spec.run_spec import LoraSpec

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak = matmul_rate(device, dtype)
    print(f"[3] dense matmul rate ({dtype}): {peak / 1e12:.1f} TFLOP/s")
    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.mlp,
                      num_hidden_layers=args.layers, num_attention_heads=args.heads,
                      num_key_value_heads=args.heads, max_position_embeddings=args.seq * 2)
    t = time.perf_counter()
    with torch.device(device):
        torch.manual_seed(0)
        model = LlamaForCausalLM(cfg).to(dtype)
    model = add_lora(model, LoraSpec(r=4, alpha=32, dropout=0.0), seed=0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[2] 7B-shaped model: {n_params / 1e9:.2f} B params, built in {time.perf_counter() - t:.1f} s")

    g = torch.Generator().manual_seed(0)
    half = args.seq // 2

    def sample():
        ids = torch.randint(2, args.vocab, (args.seq,), generator=g).tolist()
        return Encoded(tuple(ids), tuple([-100] * half + ids[half:]), half)

    n = args.n_train + args.n_test
    data = [sample() for _ in range(n)]
    sample_features(model, data[: args.batch], 0, device, args.batch, progress=False)  # warm-up
    _sync(device)
    t = time.perf_counter()
    feats = sample_features(model, data, 0, device, args.batch, progress=False)
    _sync(device)
    dt = time.perf_counter() - t
    d = sum(x.shape[1] for x in feats.grads)
    # forward 2·P·tokens, backward through activations ~2·P·tokens (no frozen-weight grads)
    flops = 4 * (n_params - d) * n * args.seq
    print(f"    per-sample LoRA grads: {n} samples × {args.seq} tokens, {len(feats.grads)} blocks, {d:,} LoRA "
          f"params: {dt:.1f} s = {n / dt:.1f} samples/s, ~{flops / dt / 1e12:.1f} TFLOP/s "
          f"({100 * flops / dt / peak:.0f}% of matmul rate)")

    def split(lo, hi):
        return Features(grads=[x[lo:hi].to(device) for x in feats.grads])

    train, test = split(0, args.n_train), split(args.n_train, n)
    datainf = get_method("datainf")
    datainf(train, test)
    _sync(device)
    t = time.perf_counter()
    S = datainf(train, test)
    _sync(device)
    dt = time.perf_counter() - t
    sflops = 6 * args.n_train * args.n_test * d  # coef, correction and score matmuls
    print(f"    DataInf scores {S.shape[0]}×{S.shape[1]}: {dt:.2f} s, ~{sflops / dt / 1e12:.2f} TFLOP/s, "
          f"finite: {bool(torch.isfinite(torch.as_tensor(S)).all())}")


if __name__ == "__main__":
    main()
