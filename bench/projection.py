"""The error random projection adds to GradSim, gradient cosine and DataInf, against the unprojected scores.

Run from the repository root:  .venv/bin/python -m bench.projection   (--help for models, k, seeds, sizes)

For each model (default: the tiny random Llama and SmolLM2-135M, cached locally): LoRA (r=4 on q_proj, v_proj,
the quick preset) fine-tuned for one epoch on a small grammars task, then exact per-sample LoRA gradients of the
training and test samples (engine.features.grads) and, for every k and seed, the projected methods (engine.features.projection:
a seeded Rademacher matrix per LoRA block to min(k, d_l) dimensions) against the unprojected ones. Prints per
(method, k): the mean over seeds of the relative Frobenius error ||S_k - S||_F / ||S||_F, the mean per-test
Spearman correlation with S, the share of test samples with the same top-1 training sample, and the float32
bytes per training sample (projected vs full) with what 100k training samples would take.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings

import numpy as np
import torch

from engine.data.encoding import encode
from engine.data.tasks import build_task
from engine.evaluation.projection_error import projection_error
from engine.features.grads import sample_features
from engine.features.projection import project_grads
from engine.features.rept import rept_features
from engine.features.types import Features
from engine.model.base import load_base
from engine.model.finetune import add_lora, finetune
from engine.spec.presets import PRESETS


def features(model_name: str, n_train_per_label: int, n_test_per_label: int, epochs: int):
    quick = PRESETS["quick"]
    model, tok = load_base(model_name)
    model = add_lora(model, quick.lora, seed=0)
    task = build_task("grammars", seed=0, n_train_per_label=n_train_per_label, n_test_per_label=n_test_per_label)
    train = quick.train
    enc = [encode(s, tok, train.template, train.max_length, train.loss_on) for s in task.train]
    test_enc = [encode(s, tok, train.template, train.max_length, train.loss_on) for s in task.test]
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    result = finetune(model, enc, tok.pad_token_id, dataclasses.replace(train, epochs=epochs), cpu, progress=False)
    del result
    model.eval()
    t = time.perf_counter()
    f_tr = sample_features(model, enc, tok.pad_token_id, cpu, 16, progress=False)
    grad_s = time.perf_counter() - t
    f_te = sample_features(model, test_enc, tok.pad_token_id, cpu, 16, progress=False)
    t = time.perf_counter()
    rept_features(model, enc, tok.pad_token_id, cpu, 16, progress=False)
    rept_s = time.perf_counter() - t
    timing = {"grads_s_per_sample": grad_s / len(enc), "rept_s_per_sample": rept_s / len(enc)}
    return (Features(grads=f_tr.grads, block_names=f_tr.block_names),
            Features(grads=f_te.grads, block_names=f_te.block_names), timing)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tiny", "smollm2-135m"])
    ap.add_argument("--ks", nargs="+", type=int, default=[8, 32, 128, 512])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--train-per-label", type=int, default=6)
    ap.add_argument("--test-per-label", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    for name in args.models:
        train, test, timing = features(name, args.train_per_label, args.test_per_label, args.epochs)
        widths = [g.shape[1] for g in train.grads]
        print(f"\n== {name}: {train.n} train x {test.n} test, {len(widths)} LoRA blocks, "
              f"{sum(widths):,} gradient entries per sample (block widths {sorted(set(widths))})")
        print(f"   exact per-sample gradients {timing['grads_s_per_sample'] * 1e3:.1f} ms/sample, "
              f"RepT features {timing['rept_s_per_sample'] * 1e3:.1f} ms/sample")
        for k in args.ks:
            t = time.perf_counter()
            project_grads(train.grads, k, 0)
            print(f"   projecting to k={k}: {(time.perf_counter() - t) / train.n * 1e3:.2f} ms/sample")
        t = time.perf_counter()
        rows = projection_error(train, test, args.ks, args.seeds)
        print(f"   (error table computed in {time.perf_counter() - t:.1f} s)")
        full = rows[0]["full_bytes_per_sample"]
        print(f"{'method':<14}{'k':>6}{'rel_frob':>10}{'+-':>7}{'spearman':>10}{'top1':>7}"
              f"{'bytes/sample':>14}{'vs full':>9}{'100k samples':>14}")
        for method in dict.fromkeys(r["method"] for r in rows):
            for k in args.ks:
                rs = [r for r in rows if r["method"] == method and r["k"] == k]
                err = np.array([r["rel_frob"] for r in rs])
                b = rs[0]["bytes_per_sample"]
                print(f"{method:<14}{k:>6}{err.mean():>10.4f}{err.std():>7.4f}"
                      f"{np.mean([r['spearman'] for r in rs]):>10.4f}{np.mean([r['top1'] for r in rs]):>7.2f}"
                      f"{b:>14,}{full / b:>8.1f}x{b * 1e5 / 2**30:>11.2f} GiB")
        print(f"{'(unprojected)':<14}{'':>6}{'':>10}{'':>7}{'':>10}{'':>7}{full:>14,}{1:>8.1f}x"
              f"{full * 1e5 / 2**30:>11.2f} GiB")


if __name__ == "__main__":
    main()
