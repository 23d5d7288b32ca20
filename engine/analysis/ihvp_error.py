"""Analysis 1: how well do the iHVP approximations approximate the inverse-Hessian-vector product?

On parameter subsets of growing size P (the first few entries of one LoRA matrix, that matrix, every LoRA matrix
of its layer, all LoRA matrices), each treated as ONE block, we compare every approximation ``q ~= H_P^{-1} v``
against the exact one, where (as in ``engine.methods.exact``)

    H_P = G_P^T G_P / n + lambda_P I,     lambda_P = mean(G_P ** 2) / lambda_c

with G_P [n, d_P] the training gradients restricted to P and v [d_P] a test gradient. Measures per
(subset, method, lambda_c, iterations), over the m test samples:

    rel_error = mean_j ||q_j - q*_j|| / ||q*_j||        cosine = mean_j cos(q_j, q*_j)
    spearman  = mean_j Spearman(s_j, s*_j) with s_j = G_P q_j the scores it gives the n training samples
    acc       = Acc@1 of those scores (the paper's label-based metric), acc_exact the same for the exact iHVP
    time_s    = wall time of the approximation on this subset (all m test samples)

Methods: ``datainf``, ``lissa`` (run to convergence), ``lissa_paper`` (the paper's 3-step recursion), the
LiSSA iterate after exactly T steps (``lissa`` with ``iterations`` = T, the "error vs iterations" curve) and,
on subsets made of several whole LoRA matrices, the block-diagonal forms the engine actually scores with
(``exact_blockdiag``, ``datainf_blockdiag``: one H per LoRA matrix), which shows what ignoring the curvature
between matrices costs; and, when the run computed K-FAC factors, ``ekfac`` and ``kfac`` (per LoRA matrix) on
the subsets made of whole matrices. lissa_paper is not an iHVP approximation (~4 v); its rel_error says how far it is.
"""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from engine import metrics
from engine.methods.datainf import precondition_datainf
from engine.methods._kronecker import kronecker_precondition
from engine.methods.exact import precondition_exact
from engine.methods.lissa import precondition_lissa
from engine.methods.lissa_paper import precondition_lissa_paper

LEVELS = ("entries", "matrix", "layer", "all")


@dataclass(frozen=True)
class Subset:
    """A parameter subset: ``parts`` = (block index, first entry, stop entry) slices of the flat LoRA blocks."""

    level: str
    description: str
    parts: tuple[tuple[int, int, int], ...]

    @property
    def dim(self) -> int:
        return sum(stop - start for _, start, stop in self.parts)

    @property
    def whole_blocks(self) -> bool:
        """Several whole LoRA matrices (where a block-diagonal form differs from the full inverse)."""
        return len(self.parts) > 1

    def whole_matrices(self, block_dims: Sequence[int]) -> bool:
        """Every part is a whole LoRA matrix (what K-FAC's Kronecker factors describe)."""
        return all(a == 0 and z == block_dims[b] for b, a, z in self.parts)

    def take(self, grads: Sequence[torch.Tensor], dtype=torch.float64) -> torch.Tensor:
        """The subset's gradient columns [n, dim] (float64) from per-block gradients [n, d_l]."""
        return torch.cat([grads[b][:, a:z].to(dtype) for b, a, z in self.parts], dim=1)


def parameter_subsets(block_names: Sequence[str], block_dims: Sequence[int], entries: int = 16) -> list[Subset]:
    """The four nested subsets of growing size, anchored at the first LoRA block (block 0).

    entries: the first ``entries`` entries of block 0; matrix: block 0; layer: every block of block 0's
    transformer layer (found by the ``layers.<i>.`` part of its name; the first 4 blocks if names have none);
    all: every block. Subsets that would repeat a smaller one (e.g. a 1-layer model) are dropped.
    """
    d0 = int(block_dims[0])
    found = re.search(r"layers\.(\d+)\.", block_names[0]) if block_names else None
    if found:
        tag = found.group(0)
        layer = [i for i, name in enumerate(block_names) if tag in name]
        layer_desc = f"every LoRA matrix of layer {found.group(1)} ({len(layer)} matrices)"
    else:
        layer = list(range(min(4, len(block_dims))))
        layer_desc = f"the first {len(layer)} LoRA matrices"
    whole = lambda idx: tuple((i, 0, int(block_dims[i])) for i in idx)  # noqa: E731
    name0 = block_names[0] if block_names else "block 0"
    out = [
        Subset("entries", f"the first {min(entries, d0)} entries of {name0}", ((0, 0, min(entries, d0)),)),
        Subset("matrix", f"all of {name0}", ((0, 0, d0),)),
        Subset("layer", layer_desc, whole(layer)),
        Subset("all", f"every LoRA matrix ({len(block_dims)})", whole(range(len(block_dims)))),
    ]
    kept, seen = [], set()
    for s in out:
        if s.parts not in seen:
            kept.append(s)
            seen.add(s.parts)
    return kept


def _spearman_mean(S: np.ndarray, R: np.ndarray) -> float:
    from engine.metrics import spearman_rows

    return float(np.nanmean(spearman_rows(S, R)))


def _blockdiag(precondition: Callable, subset: Subset, G: torch.Tensor, V: torch.Tensor, **kw) -> torch.Tensor:
    """Apply a per-block preconditioner on each LoRA matrix of ``subset`` separately (columns of G, V)."""
    out, col = [], 0
    for b, a, z in subset.parts:
        w = z - a
        out.append(precondition(G[:, col:col + w], V[:, col:col + w], block=b, **kw))
        col += w
    return torch.cat(out, dim=1)


def _compare(Q: torch.Tensor, Q_star: torch.Tensor, G: torch.Tensor, S_star: np.ndarray,
             train_labels, test_labels) -> dict:
    """rel_error, cosine, spearman, acc of approximate queries Q [m, d] against exact Q_star [m, d]."""
    tiny = torch.finfo(Q.dtype).tiny
    diff = (Q - Q_star).norm(dim=1) / Q_star.norm(dim=1).clamp_min(tiny)
    cos = (Q * Q_star).sum(1) / (Q.norm(dim=1) * Q_star.norm(dim=1)).clamp_min(tiny)
    S = (Q @ G.T).numpy()
    return {"rel_error": float(diff.mean()), "cosine": float(cos.mean()), "spearman": _spearman_mean(S, S_star),
            "acc": metrics.acc_at_1(S, train_labels, test_labels)}


def ihvp_error(train_grads: Sequence[torch.Tensor], test_grads: Sequence[torch.Tensor],
               block_names: Sequence[str], train_labels: Sequence[str], test_labels: Sequence[str], *,
               lambda_cs: Sequence[float] = (0.1, 1.0, 10.0, 100.0),
               iterations: Sequence[int] = (1, 3, 10, 30, 100, 300, 1000, 3000),
               sweep_lambda_c: float = 10.0, entries: int = 16, checkpoint: int = 0, kfac=None,
               progress: Callable[[str], None] | None = None) -> list[dict]:
    """One row per (subset, method, lambda_c, iterations); see the module docstring for the columns.

    train_grads / test_grads: per-block gradients [n, d_l] / [m, d_l]. The LiSSA step sweep runs at
    ``sweep_lambda_c`` only (the spec's damping). Rows with ``iterations`` None are the methods' own defaults.
    kfac: the training samples' K-FAC factors (``engine.grads.KroneckerFactors``); when given, EK-FAC and K-FAC
    (per LoRA matrix) are compared too, on the subsets made of whole matrices.
    """
    dims = [int(g.shape[1]) for g in train_grads]
    rows: list[dict] = []
    for subset in parameter_subsets(block_names, dims, entries):
        if progress:
            progress(f"iHVP error: {subset.level} (d = {subset.dim})")
        G, V = subset.take(train_grads), subset.take(test_grads)
        base = {"checkpoint": checkpoint, "level": subset.level, "description": subset.description,
                "dim": subset.dim, "n_blocks": len(subset.parts)}
        for lc in sorted(set(lambda_cs) | {sweep_lambda_c}):
            t = time.perf_counter()
            Q_star = precondition_exact(G, V, lambda_c=lc)
            t_exact = time.perf_counter() - t
            S_star = (Q_star @ G.T).numpy()
            acc_exact = metrics.acc_at_1(S_star, train_labels, test_labels)

            def add(method: str, fn: Callable[[], torch.Tensor], iters: int | None = None, note: str = ""):
                t0 = time.perf_counter()
                with warnings.catch_warnings():  # LiSSA's "did not reach tol" goes into the row's note
                    warnings.simplefilter("ignore", RuntimeWarning)
                    Q = fn()
                elapsed = time.perf_counter() - t0
                rows.append({**base, "method": method, "lambda_c": float(lc), "iterations": iters,
                             **_compare(Q, Q_star, G, S_star, train_labels, test_labels),
                             "acc_exact": acc_exact, "time_s": elapsed, "time_exact_s": t_exact, "note": note})

            add("datainf", lambda: precondition_datainf(G, V, lambda_c=lc))
            info: dict = {}
            add("lissa", lambda: precondition_lissa(G, V, lambda_c=lc, info=info))
            rows[-1]["iterations"] = int(info.get("iterations", 0))
            rows[-1]["note"] = str(info.get("status", ""))
            add("lissa_paper", lambda: precondition_lissa_paper(G, V, lambda_c=lc))
            if subset.whole_blocks:
                add("exact_blockdiag", lambda: _blockdiag(precondition_exact, subset, G, V, lambda_c=lc))
                add("datainf_blockdiag", lambda: _blockdiag(precondition_datainf, subset, G, V, lambda_c=lc))
            if kfac is not None and subset.whole_matrices(dims):  # per LoRA matrix, like the methods
                for name, corrected in (("ekfac", True), ("kfac", False)):
                    add(name, lambda c=corrected: _blockdiag(kronecker_precondition(c), subset, G, V, lambda_c=lc,
                                                             factors=kfac))
            if lc == sweep_lambda_c:
                for T in iterations:
                    add("lissa_steps", lambda T=T: precondition_lissa(G, V, lambda_c=lc, iterations=int(T)),
                        iters=int(T))
    return rows
