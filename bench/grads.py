"""Batched per-sample LoRA gradients vs the batch-size-1 loop, timed side by side in one run.

    .venv/bin/python -m bench.grads [--model smollm2-135m|tiny] [--n 48] [--batch 16] [--repeat 2]

Both sides take the same samples (a grammars task, the quick preset's template and LoRA) from the same
adapter. The loop is one forward + backward per sample with ``.grad`` on the LoRA weights (the textbook way);
the batched path is ``engine.features.grads.sample_features``. The loop is the tests' reference
(``tests/engine/_references.py``). Prints the speed ratio and the max relative difference.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import torch


def trained_looking(model):
    """The LoRA model with small random B matrices (B = 0 at initialisation would leave the A blocks without
    gradient), in eval mode; the benches' stand-in for a fine-tuned adapter."""
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_((torch.randn(p.shape, generator=g) * 0.01).to(p.device))
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2, help="alternate loop/batched this many times; best of each")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")

    from engine.data.encoding import encode
    from engine.data.tasks import build_task
    from engine.features.grads import sample_features
    from engine.model.base import load_base, resolve_device
    from engine.model.finetune import add_lora
    from engine.spec.presets import PRESETS
    from tests.engine._references import loop_gradients  # the tests' reference loop: one home for it

    spec = PRESETS["quick"]
    device = resolve_device(args.device)
    model, tok = load_base(args.model)
    model = trained_looking(add_lora(model, spec.lora, seed=0).to(device))
    task = build_task("grammars", seed=0, n_train_per_label=max(1, args.n // 10 + 1), n_test_per_label=1)
    enc = [encode(s, tok, spec.train.template, spec.train.max_length, spec.train.loss_on)
           for s in task.train[: args.n]]

    t_loop, t_batch = [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        _, ref = loop_gradients(model, enc, device)
        t_loop.append(time.perf_counter() - t)
        t = time.perf_counter()
        got = sample_features(model, enc, tok.pad_token_id, device, args.batch, progress=False).grads
        t_batch.append(time.perf_counter() - t)
    rel = max(float((a - b).abs().max() / b.abs().max().clamp(min=1e-30)) for a, b in zip(got, ref))
    n_params = sum(x.shape[1] for x in got)
    print(f"model={args.model} device={device} samples={len(enc)} lora_blocks={len(got)} lora_params={n_params}")
    print(f"{'path':<10}{'best s':>10}{'samples/s':>12}")
    print(f"{'loop':<10}{min(t_loop):>10.2f}{len(enc) / min(t_loop):>12.1f}")
    print(f"{'batched':<10}{min(t_batch):>10.2f}{len(enc) / min(t_batch):>12.1f}")
    print(f"speed ratio (loop / batched): {min(t_loop) / min(t_batch):.2f}x   max rel diff: {rel:.2e}")


if __name__ == "__main__":
    main()
