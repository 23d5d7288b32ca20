"""Analysis 1: how well do the iHVP approximations approximate the inverse-Hessian-vector product?

On parameter subsets of growing size P (the first few entries of one LoRA matrix, that matrix, every LoRA matrix
of its layer, all LoRA matrices) we compare every approximation ``q ~= H^{-1} v`` against an exact one, where v
[d_P] is a test gradient and G_P [n, d_P] the training gradients restricted to P. Each row names its reference:

- ``shared λ`` (the subset treated as ONE block, as ``engine.scoring.methods.exact`` treats one LoRA matrix):
  ``H_P = G_P^T G_P / n + lambda_P I``, ``lambda_P = mean(G_P ** 2) / lambda_c``. The reference of the single-block
  methods: ``datainf``, ``lissa`` (run to convergence), ``lissa_paper`` (the paper's 3-step recursion) and the
  LiSSA iterate after exactly T steps (``lissa_steps`` with ``iterations`` = T, the "error vs steps" curve).
- ``per-matrix λ`` (on subsets made of several LoRA matrices): ``H = G_P^T G_P / n + diag(lambda_l on the columns
  of matrix l)``, each matrix damped with its own ``lambda_l = mean(G_l ** 2) / lambda_c`` as the engine's methods
  damp. The reference of the block-diagonal forms the engine scores with — ``exact_blockdiag`` and
  ``datainf_blockdiag`` (one H per LoRA matrix) and, when the run computed K-FAC factors, ``ekfac`` and ``kfac``
  (per LoRA matrix, on subsets made of whole matrices) — so their error is what ignoring the curvature BETWEEN
  matrices costs, not a damping mismatch (LoRA A and B gradients differ in scale by orders of magnitude, so one
  shared λ damps one of them far more than its own λ_l would).
- controls: ``exact_blockdiag_shared`` (one H per matrix, every matrix damped with the shared lambda_P) against the
  shared-λ reference: the cross-matrix curvature again, under shared damping; ``exact_matrix_damping`` (the full
  inverse with per-matrix damping) against the shared-λ reference: what the damping choice alone changes.

Measures per (subset, method, lambda_c, iterations), over the m test samples:

    rel_error = mean_j ||q_j - q*_j|| / ||q*_j||        cosine = mean_j cos(q_j, q*_j)
    spearman  = mean_j Spearman(s_j, s*_j) with s_j = G_P q_j the scores it gives the n training samples
    acc       = Acc@1 of those scores (the paper's label-based metric); acc_reference the same for the reference;
    acc_exact = Acc@1 of the engine's ``exact`` method restricted to the subset (one exact H per LoRA matrix with
                its own damping; the subset's own H on a part of one matrix): at level "all" and the spec's
                lambda_c it is the ``exact`` method's Acc@1 on the leaderboard
    time_s    = wall time of the approximation on this subset (all m test samples)

lissa_paper is not an iHVP approximation (~4 v); its rel_error says how far it is.
"""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from engine.evaluation import metrics
from engine.scoring.methods._common import damping
from engine.scoring.methods._kronecker import kronecker_precondition
from engine.scoring.methods.datainf import precondition_datainf
from engine.scoring.methods.exact import damped_inverse, precondition_exact
from engine.scoring.methods.lissa import precondition_lissa
from engine.scoring.methods.lissa_paper import precondition_lissa_paper

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

    return float(np.nanmean(metrics.spearman_rows(S, R)))


def _blockdiag(precondition: Callable, subset: Subset, G: torch.Tensor, V: torch.Tensor, **kw) -> torch.Tensor:
    """Apply a per-block preconditioner on each LoRA matrix of ``subset`` separately (columns of G, V)."""
    out, col = [], 0
    for b, a, z in subset.parts:
        w = z - a
        out.append(precondition(G[:, col:col + w], V[:, col:col + w], block=b, **kw))
        col += w
    return torch.cat(out, dim=1)


def _per_matrix_damping(subset: Subset, G: torch.Tensor, lambda_c: float) -> torch.Tensor:
    """[d] the damping lambda_l of each column's LoRA matrix (its part of the subset)."""
    out, col = [], 0
    for _, a, z in subset.parts:
        w = z - a
        out.append(damping(G[:, col:col + w], lambda_c).expand(w))
        col += w
    return torch.cat(out)


def _reference(G: torch.Tensor, V: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """:func:`engine.scoring.methods.exact.damped_inverse` with per-column damping ``lam`` [d], on the columns
    with lam > 0 (a matrix whose gradients are all zero has no damping and, as in the methods, contributes
    nothing)."""
    ok = lam > 0
    Q = torch.zeros_like(V)
    if bool(ok.any()):
        Q[:, ok] = damped_inverse(G[:, ok], V[:, ok], lam[ok])
    return Q


def _shared_blockdiag(subset: Subset, G: torch.Tensor, V: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """One exact H per LoRA matrix of the subset, every one damped with the same scalar ``lam``."""
    return _blockdiag(lambda g, v, **_: _reference(g, v, lam.expand(g.shape[1])), subset, G, V)


def _compare(Q: torch.Tensor, Q_star: torch.Tensor, G: torch.Tensor, S_star: np.ndarray,
             train_labels, test_labels) -> dict:
    """rel_error, cosine, spearman, acc of approximate queries Q [m, d] against exact Q_star [m, d]."""
    tiny = torch.finfo(Q.dtype).tiny
    diff = (Q - Q_star).norm(dim=1) / Q_star.norm(dim=1).clamp_min(tiny)
    cos = (Q * Q_star).sum(1) / (Q.norm(dim=1) * Q_star.norm(dim=1)).clamp_min(tiny)
    S = (Q @ G.T).numpy()
    return {"rel_error": float(diff.mean()), "cosine": float(cos.mean()), "spearman": _spearman_mean(S, S_star),
            "acc": _acc(S, train_labels, test_labels)}


def _acc(S: np.ndarray, train_labels, test_labels) -> float | None:
    """Acc@1 of the scores ``S`` [m, n]; None without labels (an unlabelled dataset: the column reads NULL)."""
    return metrics.acc_at_1(S, train_labels, test_labels) if metrics.has_labels(train_labels) else None


SHARED, PER_MATRIX = "shared λ", "per-matrix λ"


def ihvp_error(train_grads: Sequence[torch.Tensor], test_grads: Sequence[torch.Tensor],
               block_names: Sequence[str], train_labels: Sequence[str], test_labels: Sequence[str], *,
               lambda_cs: Sequence[float] = (0.1, 1.0, 10.0, 100.0),
               iterations: Sequence[int] = (1, 3, 10, 30, 100, 300, 1000, 3000),
               sweep_lambda_c: float = 10.0, entries: int = 16, checkpoint: int = 0, kfac=None,
               progress: Callable[[str], None] | None = None) -> list[dict]:
    """One row per (subset, method, lambda_c, iterations); see the module docstring for the columns.

    train_grads / test_grads: per-block gradients [n, d_l] / [m, d_l]. The LiSSA step sweep runs at
    ``sweep_lambda_c`` only (the spec's damping). Rows with ``iterations`` None are the methods' own defaults.
    kfac: the training samples' K-FAC factors (``engine.features.grads.KroneckerFactors``); when given, EK-FAC and K-FAC
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
            Q_shared = precondition_exact(G, V, lambda_c=lc)
            t_exact = time.perf_counter() - t
            refs = {SHARED: (Q_shared, (Q_shared @ G.T).numpy())}
            if subset.whole_blocks:
                Q_fair = _reference(G, V, _per_matrix_damping(subset, G, lc))
                refs[PER_MATRIX] = (Q_fair, (Q_fair @ G.T).numpy())
                Q_engine = _blockdiag(precondition_exact, subset, G, V, lambda_c=lc)
            else:
                refs[PER_MATRIX] = refs[SHARED]  # one matrix (or part of one): its own damping is the shared one
                Q_engine = Q_shared
            acc_ref = {name: _acc(S, train_labels, test_labels) for name, (_, S) in refs.items()}
            acc_exact = _acc((Q_engine @ G.T).numpy(), train_labels, test_labels)

            def add(method: str, fn: Callable[[], torch.Tensor], reference: str = SHARED, iters: int | None = None,
                    note: str = ""):
                Q_star, S_star = refs[reference]
                t0 = time.perf_counter()
                with warnings.catch_warnings():  # LiSSA's "did not reach tol" goes into the row's note
                    warnings.simplefilter("ignore", RuntimeWarning)
                    Q = fn()
                elapsed = time.perf_counter() - t0
                rows.append({**base, "method": method, "lambda_c": float(lc), "iterations": iters,
                             "reference": reference, **_compare(Q, Q_star, G, S_star, train_labels, test_labels),
                             "acc_reference": acc_ref[reference], "acc_exact": acc_exact, "time_s": elapsed,
                             "time_exact_s": t_exact, "note": note})

            add("datainf", lambda: precondition_datainf(G, V, lambda_c=lc))
            info: dict = {}
            add("lissa", lambda: precondition_lissa(G, V, lambda_c=lc, info=info))
            rows[-1]["iterations"] = int(info.get("iterations", 0))
            rows[-1]["note"] = str(info.get("status", ""))
            add("lissa_paper", lambda: precondition_lissa_paper(G, V, lambda_c=lc))
            if subset.whole_blocks:
                add("exact_blockdiag", lambda: _blockdiag(precondition_exact, subset, G, V, lambda_c=lc), PER_MATRIX)
                add("datainf_blockdiag", lambda: _blockdiag(precondition_datainf, subset, G, V, lambda_c=lc),
                    PER_MATRIX)
                add("exact_blockdiag_shared", lambda: _shared_blockdiag(subset, G, V, damping(G, lc)))
                add("exact_matrix_damping", lambda: _reference(G, V, _per_matrix_damping(subset, G, lc)))
            if kfac is not None and subset.whole_matrices(dims):  # per LoRA matrix, like the methods
                for name, corrected in (("ekfac", True), ("kfac", False)):
                    add(name, lambda c=corrected: _blockdiag(kronecker_precondition(c), subset, G, V, lambda_c=lc,
                                                             factors=kfac), PER_MATRIX)
            if lc == sweep_lambda_c:
                for T in iterations:
                    add("lissa_steps", lambda T=T: precondition_lissa(G, V, lambda_c=lc, iterations=int(T)),
                        iters=int(T))
    return rows
