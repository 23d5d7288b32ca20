"""LiSSA (Agarwal et al. 2017; Koh & Liang 2017), run until it converges to the exact per-block iHVP.

Formula, per LoRA block l, with v = g_l(z') and the same damped Hessian as ``exact``/``datainf``:

    lambda_l = mean_i mean_k g_il[k]^2 / lambda_c
    H_l h    = (1/n) G_l^T (G_l h) + lambda_l h          (matrix-free: H_l is never formed)
    h_0 = v,   h_{t+1} = v + h_t - H_l h_t / scale_l,    iHVP ~= h_T / scale_l
    s(z_i, z') = sum_l <h_T / scale_l, g_il>

The fixed point is h* = scale_l H_l^{-1} v, and the iteration contracts when scale_l > lambda_max(H_l) / 2
(rate 1 - lambda_min(H_l)/scale_l once scale_l >= lambda_max(H_l)).

Parameters:
- ``scale``: None (default) = per block, 1.25 x the largest eigenvalue of H_l estimated by power iteration
  (Rayleigh quotient, seeded start), capped by the trace bound ``||G_l||_F^2 / n + lambda_l`` which is always
  >= lambda_max. A number = the same scale for every block.
- ``iterations``: None (default) = iterate until converged; a number = exactly that many steps, no test.
- ``tol``: stop when ``(scale_l / lambda_l) * max_j ||h_{t+1,j} - h_{t,j}|| / ||h_{t+1,j}|| < tol``. Since
  h_{t+1} - h_t is the residual v - H_l x_t (x_t = h_t/scale_l) and lambda_min(H_l) >= lambda_l, the left side
  bounds the relative error ||x_t - H_l^{-1} v|| / ||x_t||, so ``tol`` is an error bound, not just a step size.
- ``max_iter``: the most steps per block when ``iterations`` is None (a RuntimeWarning names blocks that did
  not reach ``tol``).
Shapes: G_l [n, d_l], V_l [m, d_l] (all m test vectors iterate together) -> S [m, n] float64.
Sign: larger = more responsible (paper IF = -s).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from engine.errors import InputError

from ._common import damping, gradient_method, grad_train_blocks, sq_norms
from .base import Features, register


def top_eigenvalue_gn(G: torch.Tensor, iters: int = 100, rtol: float = 1e-6, seed: int = 0) -> torch.Tensor:
    """Largest eigenvalue of ``G^T G / n`` by power iteration (Rayleigh quotient, a lower bound), 0-dim tensor."""
    n, d = G.shape
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(d, generator=gen, dtype=torch.float64).to(device=G.device, dtype=G.dtype)
    x = x / x.norm()
    est = torch.zeros((), dtype=G.dtype, device=G.device)
    for _ in range(iters):
        y = G.T @ (G @ x) / n
        new = x @ y  # Rayleigh quotient, ||x|| = 1
        ny = y.norm()
        if not bool(ny > 0):
            return new
        x = y / ny
        if bool((new - est).abs() <= rtol * new.abs()):
            return new
        est = new
    return est


def auto_scale(G: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Per-block LiSSA scale: min(1.25 x power-iteration lambda_max(H), trace bound ||G||_F^2/n + lam)."""
    n = G.shape[0]
    bound = sq_norms(G).sum() / n + lam
    return torch.minimum(1.25 * (top_eigenvalue_gn(G) + lam), bound)


def precondition_lissa(
    G: torch.Tensor,
    V: torch.Tensor,
    *,
    lambda_c: float = 10.0,
    iterations: int | None = None,
    scale: float | None = None,
    tol: float = 1e-4,
    max_iter: int = 10000,
    block: int | None = None,
    info: dict | None = None,
    **_,
) -> torch.Tensor:
    """Converging LiSSA iHVPs of one block: G [n, d], V [m, d] -> Q = h_T / scale [m, d].

    ``info`` (a dict, optional; for analyses) receives ``iterations`` run, ``scale``, ``lambda`` and
    ``error_bound`` (the stopping quantity; NaN when ``iterations`` was fixed).
    """
    n = G.shape[0]
    lam = damping(G, lambda_c)
    if not bool(lam > 0):
        if info is not None:
            info.update(iterations=0, scale=float("nan"), error_bound=0.0, **{"lambda": 0.0})
        return torch.zeros_like(V)
    if scale is None:
        s = auto_scale(G, lam)
    else:
        if not float(scale) > 0:
            raise InputError(f"lissa parameter 'scale' must be > 0 or None (automatic), got {scale!r}")
        s = torch.as_tensor(float(scale), dtype=G.dtype, device=G.device)
    if iterations is not None and int(iterations) < 0:
        raise InputError(f"lissa parameter 'iterations' must be >= 0 or None, got {iterations!r}")
    steps = int(iterations) if iterations is not None else int(max_iter)
    ratio = s / lam  # bound on the condition number used by the stopping test
    tiny = torch.finfo(G.dtype).tiny
    h = V.clone()
    converged = iterations is not None
    r = float("inf") if iterations is None else float("nan")
    done = 0
    for done in range(1, steps + 1):
        delta = V - ((h @ G.T) @ G / n + lam * h) / s  # = h_{t+1} - h_t
        h += delta
        if iterations is None:
            rel = (delta.norm(dim=1) / h.norm(dim=1).clamp_min(tiny)).max() * ratio
            r = float(rel)
            if not np.isfinite(r):
                raise InputError(f"lissa diverged in block {block} (scale {float(s):.3g} too small); use scale=None")
            if r < tol:
                converged = True
                break
    if info is not None:
        info.update(iterations=done, scale=float(s), error_bound=r, **{"lambda": float(lam)})
    if not converged:
        warnings.warn(
            f"lissa: block {block} did not reach tol={tol} in {steps} iterations (error bound {r:.3g})",
            RuntimeWarning,
            stacklevel=2,
        )
    return h / s


_fn, prepare = gradient_method(precondition_lissa)


@register(
    "lissa",
    {"grads"},
    "LiSSA run to convergence (automatic scale > lambda_max, error-bound stopping); approaches the exact iHVP.",
    prepare=prepare,
    train_blocks=grad_train_blocks,
    lambda_c=10.0,
    iterations=None,
    scale=None,
    tol=1e-4,
    max_iter=10000,
    dtype="float64",
    device=None,
)
def lissa(
    train: Features,
    test: Features,
    *,
    lambda_c=10.0,
    iterations=None,
    scale=None,
    tol=1e-4,
    max_iter=10000,
    dtype="float64",
    device=None,
) -> np.ndarray:
    """Converging LiSSA scores (see module docstring) -> float64 [n_test, n_train]; larger = more responsible."""
    return _fn(
        train,
        test,
        lambda_c=lambda_c,
        iterations=iterations,
        scale=scale,
        tol=tol,
        max_iter=max_iter,
        dtype=dtype,
        device=device,
    )
