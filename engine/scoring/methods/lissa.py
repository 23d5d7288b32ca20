"""LiSSA (Agarwal et al. 2017; Koh & Liang 2017), run until it converges to the exact per-block iHVP.

Formula, per LoRA block l, with v = g_l(z') and the same damped Hessian as ``exact``/``datainf``:

    lambda_l = mean_i mean_k g_il[k]^2 / lambda_c
    H_l h    = (1/n) G_l^T (G_l h) + lambda_l h          (matrix-free: H_l is never formed)
    h_0 = v,   h_{t+1} = v + h_t - H_l h_t / scale_l,    iHVP ~= h_T / scale_l
    s(z_i, z') = sum_l <h_T / scale_l, g_il>

The fixed point is h* = scale_l H_l^{-1} v. The error of x_t = h_t / scale_l shrinks by the factor
rho = max_k |1 - mu_k / scale_l| per step (mu_k the eigenvalues of H_l, all in [lambda_l, lambda_max]), so the
iteration converges iff scale_l > lambda_max / 2; the residual norm then decreases monotonically.

Parameters:
- ``scale``: None (default) = per block ``(1.02 * lambda_max + lambda_l) / 2``, the step that minimises rho
  over the interval [lambda_l, lambda_max] (rho ~= 1 - 2 lambda_l / lambda_max, about 2.5x fewer steps than
  scale = 1.25 lambda_max). lambda_max(H_l) - lambda_l is the top eigenvalue of the min(n, d_l)-sized Gram
  matrix (exact eigensolve; matrix-free power iteration when both n and d_l exceed 2048). The iteration itself
  never forms H_l. If a residual ever grows (an estimate that was too low), the block restarts with twice the
  scale, capped by the trace bound ``||G_l||_F^2 / n + lambda_l >= lambda_max``. A number = that scale for every
  block (a growing residual is then an InputError: the scale is too small to converge).
- ``iterations``: None (default) = iterate until converged; a number = exactly that many steps, no test.
- ``tol``: stop when ``(scale_l / lambda_l) * max_j ||h_{t+1,j} - h_{t,j}|| / ||h_{t+1,j}|| < tol`` (tested
  every ``check_every`` steps). Since h_{t+1} - h_t is the residual v - H_l x_t and lambda_min(H_l) >= lambda_l,
  the left side bounds the relative error ||x_t - H_l^{-1} v|| / ||x_t||: ``tol`` is an error bound, not a
  step size. It takes about (lambda_max / (2 lambda_l)) * ln(kappa / tol) steps; real LoRA gradients have
  lambda_max / lambda_l ~ 10^3 (lambda_c = 10), i.e. thousands of steps per block.
- ``solver``: "spectral" evaluates the T-step iterate in closed form (:func:`_spectral`: exactly the same
  numbers as running the recursion, at the cost of one eigensolve of the smaller Gram matrix, so T can be
  10^5); "iterative" runs the recursion; "auto" (default) = spectral while min(n, d_l) <= SPECTRAL_MAX. With
  the spectral solver the converging variant takes the fewest T with rho^(T+1) <= tol, where
  rho = max_k |1 - mu_k/scale| — an exact bound on the relative iHVP error.
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
from engine.features.types import Features, TrainData

from ._common import damping, full_score, grad_train_blocks, gram_method, sq_norms
from .base import register


def power_iteration_gn(G: torch.Tensor, iters: int = 100, rtol: float = 1e-6, seed: int = 0) -> torch.Tensor:
    """Largest eigenvalue of ``G^T G / n`` by matrix-free power iteration (Rayleigh quotient: a lower bound)."""
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


SPECTRAL_MAX = 4096  # "auto" uses the closed form while the smaller Gram matrix is at most this size


def top_eigenvalue_gn(G: torch.Tensor, exact_max: int = 2048) -> torch.Tensor:
    """Largest eigenvalue of ``G^T G / n`` (0-dim tensor).

    Exact when k = min(n, d) <= exact_max: eigvalsh of the k x k Gram matrix (G G^T / n or G^T G / n, which share
    their non-zero eigenvalues); one k x k matmul plus a k^3 eigensolve, cheaper than ~100 matrix-free power
    steps. Otherwise :func:`power_iteration_gn`.
    """
    n, d = G.shape
    if min(n, d) > exact_max:
        return power_iteration_gn(G)
    K = G @ G.T if n <= d else G.T @ G
    return torch.linalg.eigvalsh(K / n)[-1].clamp_min(0)


def trace_bound(G: torch.Tensor, lam: torch.Tensor, norms: torch.Tensor | None = None) -> torch.Tensor:
    """``||G||_F^2 / n + lam = trace(H)``, an upper bound on lambda_max(H) (0-dim tensor)."""
    norms = sq_norms(G) if norms is None else norms
    return norms.sum() / G.shape[0] + lam


def auto_scale(G: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Default LiSSA scale of a block: ``(1.02 * lambda_max(H) + lam) / 2`` (see the module docstring)."""
    return (1.02 * (top_eigenvalue_gn(G) + lam) + lam) / 2


def _richardson(G, V, lam, s, steps, tol, check_every, until_converged):
    """Run the LiSSA recursion; return (h, steps done, error bound, status) with status in
    {"converged", "max_iter", "fixed", "diverging"}.

    "diverging": some residual grew to twice its value at the first check. For a convergent scale every
    residual shrinks monotonically (||I - H/s|| < 1); rounding noise near convergence makes it fluctuate far
    below its first value, so only a scale below lambda_max / 2 can trigger this.
    """
    n = G.shape[0]
    tiny = torch.finfo(G.dtype).tiny
    damp = lam / s  # 0-dim tensors: no host sync inside the loop
    alpha = -1.0 / (n * float(s))
    ratio = float(s / lam)
    h = V.clone()
    first = None
    bound = float("nan")
    for t in range(1, steps + 1):
        # delta = h_{t+1} - h_t = V - (G^T G h / n + lam h) / s
        delta = torch.addmm(V - damp * h, h @ G.T, G, alpha=alpha)
        h += delta
        if until_converged and (t % check_every == 0 or t == steps):
            res = delta.norm(dim=1)
            bound = float((res / h.norm(dim=1).clamp_min(tiny)).max()) * ratio
            if not np.isfinite(bound) or (first is not None and bool((res > 2 * first).any())):
                return h, t, bound, "diverging"
            if bound < tol:
                return h, t, bound, "converged"
            if first is None:
                first = res
    return h, steps, bound, ("max_iter" if until_converged else "fixed")


def lissa_filter(mu: torch.Tensor, s: torch.Tensor, steps: int) -> torch.Tensor:
    """``f_T(mu) = sum_{j=0}^{T} (1 - mu/s)^j / s = (1 - (1 - mu/s)^(T+1)) / mu``: what T LiSSA steps (then
    dividing by the scale) apply to an eigen-direction of H with eigenvalue ``mu``. Tends to ``1/mu``."""
    return (1 - (1 - mu / s) ** (steps + 1)) / mu


def spectral_rate(G: torch.Tensor, lam: torch.Tensor, s: torch.Tensor, e_max: torch.Tensor | None = None) -> float:
    """``rho = max_k |1 - mu_k / s|`` over the spectrum [lam, lambda_max] of H: the error factor per step."""
    top = top_eigenvalue_gn(G) if e_max is None else e_max
    return max(abs(1 - float(lam / s)), abs(1 - float((top + lam) / s)))


def _spectral(G: torch.Tensor, V: torch.Tensor, lam: torch.Tensor, s: torch.Tensor, steps: int) -> torch.Tensor:
    """Exactly the LiSSA iterate after ``steps`` steps, Q = h_T / s = f_T(H) V, in closed form.

    H = G^T G / n + lam I is diagonalised through the smaller Gram matrix: for d <= n directly
    (G^T G / n = E diag(e) E^T); for n < d via G G^T / n = U diag(e) U^T, whose eigenvectors give the
    non-trivial directions W = G^T U (n e)^(-1/2); every direction orthogonal to the rows of G has eigenvalue lam:

        Q = f(lam) V + (V G^T) U diag((f(e + lam) - f(lam)) / (n e)) U^T G.

    Cost: one min(n, d)^3 eigensolve and a few matmuls, whatever ``steps`` is, so the converging variant can
    take the 10^4-10^5 steps that real LoRA gradients need (lambda_max / lambda ~ 10^3-10^4).
    """
    n, d = G.shape
    if d <= n:
        e, E = torch.linalg.eigh(G.T @ G / n)
        return ((V @ E) * lissa_filter(e.clamp_min(0) + lam, s, steps)) @ E.T
    e, U = torch.linalg.eigh(G @ G.T / n)
    keep = e > e.max().clamp_min(0) * max(n, d) * torch.finfo(G.dtype).eps  # numerically non-zero directions
    e, U = e[keep], U[:, keep]
    f_lam = lissa_filter(lam, s, steps)
    coef = (lissa_filter(e + lam, s, steps) - f_lam) / (n * e)
    return f_lam * V + (((V @ G.T) @ U) * coef) @ (U.T @ G)


def steps_for(rho: float, tol: float, max_iter: int) -> tuple[int, float]:
    """Fewest steps T with rho^(T+1) <= tol (capped at ``max_iter``) and the error bound rho^(T+1) reached."""
    if rho <= 0:
        return 0, 0.0
    if rho >= 1:
        return int(max_iter), float("inf")
    T = min(int(max_iter), max(0, int(np.ceil(np.log(tol) / np.log(rho))) - 1))
    return T, rho ** (T + 1)


def precondition_lissa(
    G: torch.Tensor,
    V: torch.Tensor,
    *,
    lambda_c: float = 10.0,
    iterations: int | None = None,
    scale: float | None = None,
    tol: float = 1e-4,
    max_iter: int = 100000,
    check_every: int = 10,
    solver: str = "auto",
    block: int | None = None,
    info: dict | None = None,
) -> torch.Tensor:
    """Converging LiSSA iHVPs of one block: G [n, d], V [m, d] -> Q = h_T / scale [m, d].

    ``info`` (a dict, optional; for analyses) receives ``iterations`` run, ``scale``, ``lambda``,
    ``error_bound`` (the stopping quantity; NaN when ``iterations`` was fixed) and ``status``
    ("converged", "max_iter", "fixed"; "restarted" is appended when the automatic scale had to fall back).
    """
    if iterations is not None and (isinstance(iterations, bool) or int(iterations) < 0):
        raise InputError(f"lissa parameter 'iterations' must be >= 0 or None, got {iterations!r}")
    if not int(max_iter) >= 1 or not int(check_every) >= 1:
        raise InputError(
            f"lissa parameters 'max_iter' and 'check_every' must be >= 1, got {max_iter!r}, {check_every!r}"
        )
    if scale is not None and not float(scale) > 0:
        raise InputError(f"lissa parameter 'scale' must be > 0 or None (automatic), got {scale!r}")
    norms = sq_norms(G)
    lam = damping(G, lambda_c, norms)
    if not bool(lam > 0):
        if info is not None:
            info.update(iterations=0, scale=float("nan"), error_bound=0.0, status="zero block", **{"lambda": 0.0})
        return torch.zeros_like(V)
    s = auto_scale(G, lam) if scale is None else torch.as_tensor(float(scale), dtype=G.dtype, device=G.device)
    if solver not in ("auto", "spectral", "iterative"):
        raise InputError(f"lissa parameter 'solver' must be auto, spectral or iterative, got {solver!r}")
    if solver == "spectral" or (solver == "auto" and min(G.shape) <= SPECTRAL_MAX):
        rho = spectral_rate(G, lam, s)
        if rho >= 1:
            raise InputError(f"lissa diverged in block {block}: scale {float(s):.3g} is below lambda_max/2; "
                             "use scale=None")
        if iterations is None:
            done, bound = steps_for(rho, tol, int(max_iter))
            status = "converged" if bound <= tol else "max_iter"
        else:
            done, bound, status = int(iterations), rho ** (int(iterations) + 1), "fixed"
        if info is not None:
            info.update(iterations=done, scale=float(s), error_bound=bound, status=status, solver="spectral",
                        **{"lambda": float(lam)})
        if status == "max_iter":
            warnings.warn(f"lissa: block {block} did not reach tol={tol} in {done} iterations "
                          f"(error bound {bound:.3g})", RuntimeWarning, stacklevel=2)
        return _spectral(G, V, lam, s, done)
    until = iterations is None
    steps = int(max_iter) if until else int(iterations)
    h, done, bound, status = _richardson(G, V, lam, s, steps, tol, int(check_every), until)
    if status == "diverging" and scale is not None:
        raise InputError(
            f"lissa diverged in block {block}: scale {float(scale):.3g} is below lambda_max/2; use scale=None"
        )
    restarts = 0
    safe = trace_bound(G, lam, norms)  # >= lambda_max: converges for sure
    while status == "diverging" and restarts < 8:  # the lambda_max estimate was too low: double the scale
        s = torch.minimum(2 * s, safe)
        restarts += 1
        h, more, bound, status = _richardson(G, V, lam, s, steps, tol, int(check_every), until)
        done += more
    if restarts:
        status += " restarted"
    if info is not None:
        info.update(iterations=done, scale=float(s), error_bound=bound, status=status, solver="iterative",
                    **{"lambda": float(lam)})
    if status.startswith("max_iter"):
        warnings.warn(
            f"lissa: block {block} did not reach tol={tol} in {steps} iterations (error bound {bound:.3g})",
            RuntimeWarning,
            stacklevel=2,
        )
    return h / s


queries = gram_method(precondition_lissa)


@register("lissa", queries=queries, train_side=grad_train_blocks, keeps=("gram",))
def lissa(train: Features | TrainData, test: Features, p) -> np.ndarray:
    """Converging LiSSA scores (see module docstring) -> float64 [n_test, n_train]; larger = more responsible.

    p: :class:`engine.catalog.methods.LissaParams` (lambda_c, iterations, scale, tol, max_iter, check_every, solver,
    dtype, device).
    """
    return full_score(queries, grad_train_blocks, train, test, p)
