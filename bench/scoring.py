"""Vectorised attribution methods vs. per-sample Python loops that follow the papers' algorithms.

Run from the repository root:  .venv/bin/python -m bench.scoring   (--help for sizes)

Inputs: the same random float32 gradients for both sides, shaped like SmolLM2-135M's LoRA (r=4 on q_proj and
v_proj of 30 layers -> 120 blocks: q lora_A [4, 576], q lora_B [576, 4], v lora_A [4, 576], v lora_B [192, 4],
i.e. d = 2304, 2304, 2304, 768 per layer; 230,400 parameters).

The loops are plain numpy float64, structured like the original code (DataInf's `IFEngineGeneration` and the
paper's `influence_function`): per test sample, per block, a Python loop over the training samples builds the
preconditioned test vector; then a loop over (train, test) pairs sums the per-block dot products. Obvious
hoisting a careful author would do is done (lambda_l computed once per block, not once per test sample). Both
timings include converting the float32 gradients to float64.

- DataInf loop: h += (v - (g.v)/(lambda + g.g) g) / (n lambda), one training sample at a time.
- LiSSA loop: per test sample and block, `iterations` steps of h <- v + h - (G^T (G h) / n + lambda h) / scale
  (numpy mat-vecs; the paper's code loops over training samples inside each step, which would be far slower).
  Converging LiSSA needs hundreds to thousands of steps (printed below), too many for the loop in a benchmark,
  so both sides run the same fixed number of steps with the same automatic per-block scale (`auto_scale`).
- Exact loop: per block H = G^T G / n + lambda I (d x d), np.linalg.inv(H), then H^{-1} v per test sample.

Prints one table: method, loop seconds, vectorised seconds, speed ratio, max relative difference
(max|a - b| / max|b|, loop = b), then the arithmetic rate of both DataInf sides. Why the DataInf ratio is what it
is: both sides do the same O(n_test * n_train * params) arithmetic (the loop ~10, the matmuls 6 flops per
element triple); the loop's numpy calls on vectors of a few thousand floats run at ~1-2 GFLOP/s, BLAS matmuls
at what the cores allow. So the ratio is bounded by (BLAS rate / loop rate) * 10/6 and grows with cores (or a
GPU), not with problem size.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from engine.features.types import Features
from engine.scoring.methods import get_method
from engine.scoring.methods.lissa import auto_scale, precondition_lissa


def smollm2_lora_dims(layers: int = 30, hidden: int = 576, kv_dim: int = 192, r: int = 4) -> list[int]:
    dims = []
    for _ in range(layers):
        dims += [r * hidden, hidden * r, r * hidden, kv_dim * r]  # q_A, q_B, v_A, v_B
    return dims


def make_grads(n: int, dims: list[int], gen: torch.Generator) -> list[torch.Tensor]:
    # Different scales per block, like real LoRA gradients (B blocks start larger than A blocks).
    return [torch.randn(n, d, generator=gen) * (1e-3 if b % 2 == 0 else 1e-2) for b, d in enumerate(dims)]


# ------------------------------------------------------------------------------------------------ loops


def to_numpy_samples(grads: list[torch.Tensor]) -> list[list[np.ndarray]]:
    """[block][sample] -> float64 vectors, as the original code holds them (one tensor per sample and block)."""
    out = []
    for g in grads:
        a = g.numpy().astype(np.float64)
        out.append([a[i] for i in range(a.shape[0])])
    return out


def loop_scores(hvps: list[list[np.ndarray]], tr: list[list[np.ndarray]]) -> np.ndarray:
    """s[j, i] = sum_l <hvp_l(j), g_l(i)>, a loop over (train, test) pairs and blocks as in the original."""
    n, m, L = len(tr[0]), len(hvps[0]), len(tr)
    S = np.zeros((m, n))
    for i in range(n):
        for j in range(m):
            s = 0.0
            for l in range(L):
                s += np.dot(hvps[l][j], tr[l][i])
            S[j, i] = s
    return S


def damping_loop(block: list[np.ndarray], lambda_c: float) -> float:
    return float(np.mean([np.mean(g * g) for g in block]) / lambda_c)


def datainf_loop(train: Features, test: Features, lambda_c: float = 10.0) -> np.ndarray:
    tr, te = to_numpy_samples(train.grads), to_numpy_samples(test.grads)
    n = len(tr[0])
    lams = [damping_loop(block, lambda_c) for block in tr]
    hvps = [[None] * len(te[0]) for _ in tr]
    for j in range(len(te[0])):
        for l, block in enumerate(tr):
            v, lam = te[l][j], lams[l]
            h = np.zeros_like(v)
            for g in block:
                c = np.dot(v, g) / (lam + np.dot(g, g))
                h += (v - c * g) / (n * lam)
            hvps[l][j] = h
    return loop_scores(hvps, tr)


def datainf_loop_original_style(train: Features, test: Features, lambda_c: float = 10.0) -> np.ndarray:
    """DataInf as its original code is structured: dicts of per-sample torch tensors keyed by sample id and block
    name, torch ops, lambda_l recomputed for every (test sample, block) pair, then the (train, test) pair loop.
    Reported as a second reference point only; the numpy loop above is the primary one."""
    names = [f"block{l}" for l in range(len(train.grads))]
    tr_dict = {i: {nm: g[i].double() for nm, g in zip(names, train.grads)} for i in range(train.n)}
    val_dict = {j: {nm: g[j].double() for nm, g in zip(names, test.grads)} for j in range(test.n)}
    n = len(tr_dict)
    hvp_dict: dict = {}
    for val_id in val_dict:
        hvp_dict[val_id] = {}
        for nm in val_dict[val_id]:
            S = torch.zeros(n, dtype=torch.float64)
            for tr_id in tr_dict:
                S[tr_id] = torch.mean(tr_dict[tr_id][nm] ** 2)
            lam = torch.mean(S) / lambda_c
            hvp = torch.zeros_like(val_dict[val_id][nm])
            for tr_id in tr_dict:
                g = tr_dict[tr_id][nm]
                c = torch.sum(val_dict[val_id][nm] * g) / (lam + torch.sum(g**2))
                hvp += (val_dict[val_id][nm] - c * g) / (n * lam)
            hvp_dict[val_id][nm] = hvp
    out = np.zeros((test.n, n))
    for tr_id in tr_dict:
        for val_id in val_dict:
            out[val_id, tr_id] = float(sum(torch.sum(hvp_dict[val_id][nm] * tr_dict[tr_id][nm]) for nm in names))
    return out


def lissa_loop(train: Features, test: Features, iterations: int, lambda_c: float = 10.0) -> np.ndarray:
    tr, te = to_numpy_samples(train.grads), to_numpy_samples(test.grads)
    n = len(tr[0])
    mats = [np.stack(block) for block in tr]
    lams = [damping_loop(block, lambda_c) for block in tr]
    scales = [float(auto_scale(torch.from_numpy(G), torch.tensor(lam, dtype=torch.float64))) for G, lam in zip(mats, lams)]
    hvps = [[None] * len(te[0]) for _ in tr]
    for j in range(len(te[0])):
        for l, G in enumerate(mats):
            v, lam, s = te[l][j], lams[l], scales[l]
            h = v.copy()
            for _ in range(iterations):
                h = v + h - (G.T @ (G @ h) / n + lam * h) / s
            hvps[l][j] = h / s
    return loop_scores(hvps, tr)


def exact_loop(train: Features, test: Features, lambda_c: float = 10.0) -> np.ndarray:
    tr, te = to_numpy_samples(train.grads), to_numpy_samples(test.grads)
    n = len(tr[0])
    hvps = []
    for l, block in enumerate(tr):
        G = np.stack(block)
        lam = damping_loop(block, lambda_c)
        H = G.T @ G / n + lam * np.eye(G.shape[1])
        Hinv = np.linalg.inv(H)
        hvps.append([Hinv @ v for v in te[l]])
    return loop_scores(hvps, tr)


# ------------------------------------------------------------------------------------------------ bench


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - t0, out


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def converging_iterations(train: Features, test: Features, blocks: list[int]) -> list[tuple[int, int, float]]:
    """Steps converging LiSSA takes (tol 1e-4 error bound) on a few blocks: (block, d, iterations)."""
    out = []
    for b in blocks:
        info: dict = {}
        precondition_lissa(
            train.grads[b].double(), test.grads[b].double(), tol=1e-4, max_iter=100000, block=b, info=info
        )
        out.append((b, train.grads[b].shape[1], info["iterations"]))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-train", type=int, default=200)
    ap.add_argument("--n-test", type=int, default=20)
    ap.add_argument("--layers", type=int, default=30, help="transformer layers (4 LoRA blocks each)")
    ap.add_argument("--lissa-iterations", type=int, default=20, help="fixed LiSSA steps for both sides")
    ap.add_argument("--methods", default="datainf,lissa,exact", help="comma list of datainf,lissa,exact")
    ap.add_argument("--float32", action="store_true", help="also time the vectorised methods in float32")
    ap.add_argument(
        "--original-style",
        action="store_true",
        help="also time DataInf against a loop structured like the original code (torch ops, lambda per test)",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    dims = smollm2_lora_dims(args.layers)
    train = Features(grads=make_grads(args.n_train, dims, gen))
    test = Features(grads=make_grads(args.n_test, dims, gen))
    print(
        f"load average {os.getloadavg()[0]:.2f} (other processes share the CPUs; ratios are noisy when > 0)\n"
        f"blocks={len(dims)} params={sum(dims):,} n_train={args.n_train} n_test={args.n_test} "
        f"torch={torch.__version__} threads={torch.get_num_threads()} cpus={os.cpu_count()} {platform.machine()}"
    )

    rows = []
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for name in methods:
        if name == "datainf":
            t_loop, ref = timed(datainf_loop, train, test)
            params = {}
        elif name == "lissa":
            t_loop, ref = timed(lissa_loop, train, test, args.lissa_iterations)
            params = {"iterations": args.lissa_iterations}
        elif name == "exact":
            t_loop, ref = timed(exact_loop, train, test)
            params = {}
        else:
            raise SystemExit(f"unknown method {name!r}")
        label = name if name != "lissa" else f"lissa ({args.lissa_iterations} steps)"
        method = get_method(name)
        method(train, test, **params)  # warm-up (thread pool, allocator)
        t_vec = min(timed(method, train, test, **params)[0] for _ in range(3))
        S = method(train, test, **params)
        rows.append((label, t_loop, t_vec, rel_diff(S, ref)))
        if name == "datainf" and args.original_style:
            t_orig, ref_orig = timed(datainf_loop_original_style, train, test)
            rows.append(("datainf vs original-style", t_orig, t_vec, rel_diff(S, ref_orig)))
        if args.float32:
            t32 = min(timed(method, train, test, dtype="float32", **params)[0] for _ in range(3))
            S32 = method(train, test, dtype="float32", **params)
            rows.append((label + " float32", t_loop, t32, rel_diff(S32, ref)))
            if name == "datainf" and args.original_style:
                rows.append(("datainf f32 vs original-style", t_orig, t32, rel_diff(S32, ref_orig)))

    print(f"\n{'method':<30}{'loop s':>10}{'vectorised s':>14}{'ratio':>9}{'max rel diff':>15}")
    for label, tl, tv, rd in rows:
        print(f"{label:<30}{tl:>10.2f}{tv:>14.4f}{tl / tv:>8.0f}x{rd:>15.2e}")
    for label, tl, tv, _ in rows:
        if label == "datainf":
            mnd = args.n_test * args.n_train * sum(dims)
            print(
                f"\ndatainf arithmetic: loop ~{10 * mnd / tl / 1e9:.1f} GFLOP/s (10 flops per test x train x param), "
                f"vectorised ~{6 * mnd / tv / 1e9:.1f} GFLOP/s (6 flops; float64 BLAS on {torch.get_num_threads()} "
                "threads)"
            )

    if "lissa" in methods:
        its = converging_iterations(train, test, [0, 3])
        print(
            "\nconverging LiSSA (tol 1e-4 error bound) needs: "
            + ", ".join(f"block {b} (d={d}): {k} steps" for b, d, k in its)
        )


if __name__ == "__main__":
    main()
