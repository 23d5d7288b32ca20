"""Seeded random projection of per-sample LoRA gradients, one block at a time (TRAK / LoGra style).

Why: a per-sample gradient holds every LoRA entry (SmolLM2-135M, r=4 on q/v: 230 400 floats = 0.9 MB per sample,
92 GB for 100k training samples). Projecting block l of width d_l to k_l = min(k, d_l) dimensions keeps inner
products in expectation and shrinks that to ``4 * sum_l k_l`` bytes per sample, so GradSim, gradient cosine and
DataInf can score 100k training samples from memory.

The matrix of block l, ``P_l`` [k_l, d_l], depends only on (seed, block index l, d_l, k, kind); it is drawn
from its own ``torch.Generator`` on the CPU (the same on every device and in every process), so the training
shards, the test samples and a later rerun are all projected alike. Kinds:

- ``rademacher`` (default, TRAK's choice): entries +-1/sqrt(k), so ``E[P^T P] = I`` and
  ``E[<P g, P v>] = <g, v>``;
- ``gaussian``: entries N(0, 1/k), same expectation;
- ``orthogonal``: ``sqrt(d/k)`` times k orthonormal rows (QR of a Gaussian matrix), ``E[P^T P] = I`` as
  well; at k = d it is an orthogonal matrix and preserves every inner product exactly.

A block no wider than k (d_l <= k) is kept as it is (identity): exact, and no larger than the original. For
LoRA blocks d_l = r x (layer width), so ``P_l`` is small (k=256, d=2304: 2.4 MB); matrices are kept in a
memo while their total stays under ``memo_bytes`` and regenerated otherwise (bounded memory either way).

A LoGra-style factorised projection (separate projections of the layer input and output) would need hooks in
the gradient computation; it is not offered here.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace

import torch

from engine.catalog.methods import PROJECTION_KINDS as KINDS  # declared with the method parameters (torch-free)
from engine.errors import InputError

DEFAULT_KIND = "rademacher"


@dataclass(frozen=True)
class ProjectedGrads:
    """Projected gradients of n samples: ``blocks[l]`` [n, min(dim, widths[l])] float32.

    ``widths`` are the original block widths d_l (DataInf's damping is defined with them).
    """

    blocks: list[torch.Tensor]
    dim: int
    seed: int
    kind: str
    widths: tuple[int, ...]

    @property
    def key(self) -> tuple[int, int, str]:
        return (self.dim, self.seed, self.kind)

    @property
    def n(self) -> int:
        return int(self.blocks[0].shape[0]) if self.blocks else 0

    def rows(self, start: int, stop: int) -> "ProjectedGrads":
        return replace(self, blocks=[b[start:stop] for b in self.blocks])


def check_params(dim, seed, kind) -> None:
    """InputError unless dim is a positive integer, seed a non-negative integer and kind a known kind."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise InputError(f"projection dimension 'proj_dim' must be a positive integer, got {dim!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"projection seed 'proj_seed' must be a non-negative integer, got {seed!r}")
    if kind not in KINDS:
        raise InputError(f"projection kind 'proj_kind' must be one of {', '.join(KINDS)}, got {kind!r}")


def _block_seed(seed: int, block: int, d: int, k: int, kind: str) -> int:
    digest = hashlib.blake2b(f"{seed}:{block}:{d}:{k}:{kind}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def projection_matrix(d: int, k: int, seed: int, block: int = 0, kind: str = "rademacher") -> torch.Tensor:
    """``P`` [k, d] float32 (CPU) of block ``block``; see the module docstring. Requires k <= d."""
    check_params(k, seed, kind)
    if k > d:
        raise InputError(f"projection to k={k} dimensions needs k <= d={d}")
    gen = torch.Generator().manual_seed(_block_seed(seed, block, d, k, kind))
    if kind == "rademacher":
        P = torch.randint(0, 2, (k, d), generator=gen, dtype=torch.int8).to(torch.float32).mul_(2).sub_(1)
        return P.mul_(1.0 / math.sqrt(k))
    A = torch.randn(d, k, generator=gen, dtype=torch.float64)
    if kind == "gaussian":
        return (A.T / math.sqrt(k)).to(torch.float32).contiguous()
    Q, R = torch.linalg.qr(A)  # Q [d, k] orthonormal columns; sign fix makes Q a function of A alone
    Q = Q * torch.sign(torch.diagonal(R))[None, :]
    return (Q.T * math.sqrt(d / k)).to(torch.float32).contiguous()


class Projector:
    """Projects gradient blocks ``[n, d_l]`` -> ``[n, min(dim, d_l)]`` with the per-block matrices above."""

    def __init__(self, widths, dim: int, seed: int = 0, kind: str = "rademacher", memo_bytes: int = 64 << 20):
        check_params(dim, seed, kind)
        self.widths = tuple(int(d) for d in widths)
        self.dim, self.seed, self.kind = dim, seed, kind
        self.memo_bytes = memo_bytes
        self._memo: dict[int, torch.Tensor] = {}

    def out_widths(self) -> tuple[int, ...]:
        return tuple(min(self.dim, d) for d in self.widths)

    def matrix(self, block: int) -> torch.Tensor | None:
        """``P_l`` [k_l, d_l], or None when the block is kept as it is (d_l <= dim)."""
        d = self.widths[block]
        if d <= self.dim:
            return None
        if block in self._memo:
            return self._memo[block]
        P = projection_matrix(d, self.dim, self.seed, block, self.kind)
        if sum(m.numel() for m in self._memo.values()) * 4 + P.numel() * 4 <= self.memo_bytes:
            self._memo[block] = P
        return P

    def project_block(self, block: int, G: torch.Tensor) -> torch.Tensor:
        """``G @ P_l^T`` [n, k_l] float32 on G's device (G itself when the block is kept).

        Computed in float64 and rounded once, so a row's projection does not depend on which other rows share
        the call (a training shard projects to the same values as the whole set).
        """
        if G.ndim != 2 or G.shape[1] != self.widths[block]:
            raise InputError(f"gradient block {block} has shape {tuple(G.shape)}, expected [n, {self.widths[block]}]")
        P = self.matrix(block)
        if P is None:
            return G.to(torch.float32)
        return (G.to(torch.float64) @ P.to(device=G.device, dtype=torch.float64).T).to(torch.float32)

    def project(self, grads: list[torch.Tensor]) -> ProjectedGrads:
        if len(grads) != len(self.widths):
            raise InputError(f"got {len(grads)} gradient blocks, the projector has {len(self.widths)}")
        return ProjectedGrads([self.project_block(l, G) for l, G in enumerate(grads)], self.dim, self.seed,
                              self.kind, self.widths)


def project_grads(grads: list[torch.Tensor], dim: int, seed: int = 0, kind: str = "rademacher") -> ProjectedGrads:
    """Project every block of ``grads`` (list of [n, d_l]) in one call."""
    return Projector([g.shape[1] for g in grads], dim, seed, kind).project(grads)


def merge_projected(parts: list[ProjectedGrads]) -> ProjectedGrads:
    """Concatenate projections of consecutive shards (same projector)."""
    first = parts[0]
    if any((p.key, p.widths) != (first.key, first.widths) for p in parts):
        raise ValueError("shards were projected differently")
    return replace(first, blocks=[torch.cat([p.blocks[l] for p in parts]) for l in range(len(first.blocks))])
