import warnings

import numpy as np
import pytest
import torch

from engine.scoring.methods import get_method
from engine.scoring.methods.exact import precondition_exact
from engine.scoring.methods.lissa import (
    auto_scale,
    power_iteration_gn,
    precondition_lissa,
    top_eigenvalue_gn,
    trace_bound,
)

from ._helpers import make_features, np_blocks, np_damping, rel_err


def lissa_loop(train, test, iterations, scale, lambda_c=10.0):
    """LiSSA as written, per test sample and per block: h <- v + h - H h / scale, H h as a loop over samples."""
    Gs, Vs = np_blocks(train), np_blocks(test)
    n = train.n
    S = np.zeros((test.n, n))
    for j in range(test.n):
        for G, V in zip(Gs, Vs):
            lam = np_damping(G, lambda_c)
            v = V[j]
            h = v.copy()
            for _ in range(iterations):
                Hh = lam * h
                for i in range(n):
                    Hh += (G[i] @ h) * G[i] / n
                h = v + h - Hh / scale
            for i in range(n):
                S[j, i] += (h / scale) @ G[i]
    return S


def test_lissa_fixed_iterations_match_loop(feats):
    train, test = feats
    S = get_method("lissa")(train, test, iterations=25, scale=50.0)
    assert rel_err(S, lissa_loop(train, test, 25, 50.0)) < 1e-12


def test_lissa_converges_to_exact(feats):
    train, test = feats
    S = get_method("lissa")(train, test)
    S_exact = get_method("exact")(train, test)
    assert rel_err(S, S_exact) <= 1e-3


@pytest.mark.parametrize("block", [0, 1, 2])
def test_lissa_block_ihvp_within_tol(feats, block):
    """Per block and per test vector the relative iHVP error is below the tol it promises."""
    train, test = feats
    G = train.grads[block].double()
    V = test.grads[block].double()
    Q = precondition_lissa(G, V, tol=1e-4)
    Q_exact = precondition_exact(G, V)
    err = ((Q - Q_exact).norm(dim=1) / Q_exact.norm(dim=1)).max()
    assert float(err) <= 1e-4


def _block(feats, block):
    """Block ``block`` of the training and test gradients as float64 numpy, with its damping."""
    train, test = feats
    G, V = train.grads[block].numpy().astype(np.float64), test.grads[block].numpy().astype(np.float64)
    return G, V, np_damping(G)


def _solution(G, V, lam):
    """x* = H^-1 v for every test vector, with H = G^T G / n + lam I built and solved explicitly."""
    H = G.T @ G / G.shape[0] + lam * np.eye(G.shape[1])
    return np.linalg.solve(H, V.T).T, H


def _error(X, X_star) -> float:
    """The largest relative error ||x_j - x*_j|| / ||x*_j|| over the test vectors."""
    return float(np.max(np.linalg.norm(X - X_star, axis=1) / np.linalg.norm(X_star, axis=1)))


def steps_to(G, V, lam, scales, tol, cap=20000) -> np.ndarray:
    """For each scale, the fewest LiSSA steps after which the iterate x_t = h_t / scale is within ``tol`` of the
    exact iHVP for every test vector (h_0 = v, h_{t+1} = v + h_t - H h_t / scale); inf if it never gets there.
    All scales iterate side by side."""
    X_star, H = _solution(G, V, lam)
    s = np.asarray(scales, dtype=np.float64)[:, None, None]
    h = np.broadcast_to(V, (len(s), *V.shape)).copy()
    out = np.full(len(s), np.inf)
    for t in range(cap + 1):
        err = np.max(np.linalg.norm(h / s - X_star, axis=2) / np.linalg.norm(X_star, axis=1), axis=1)
        out[(err <= tol) & np.isinf(out)] = t
        live = np.isinf(out) & np.isfinite(err) & (err < 1e6)  # not there yet, not diverged
        if not live.any():
            break
        h = V + h - h @ H / s
    return out


def fewest_steps(G, V, lam, tol) -> tuple[float, float]:
    """(steps, scale) of the best scale on a fine grid from lambda_max(H)/2 (below it LiSSA diverges) to 3.5x that."""
    top = float(np.linalg.eigvalsh(_solution(G, V, lam)[1]).max())
    grid = top / 2 * (1 + np.logspace(-4, 0.4, 45))
    steps = steps_to(G, V, lam, grid, tol)
    best = int(np.argmin(steps))
    return float(steps[best]), float(grid[best])


# Blocks 1 and 2 have d > n, so G^T G is singular and the smallest eigenvalue of H is the damping itself, as for
# LoRA blocks wider than the training set: the interval [lambda, lambda_max] the automatic scale is built for.
# (Block 0, d < n, has lambda_min(H) well above the damping; there the scale is safe but not the fastest.)
@pytest.mark.parametrize("block", [1, 2])
def test_the_automatic_scale_needs_about_the_fewest_steps(feats, block):
    """With the default scale LiSSA reaches the exact iHVP within tol in at most 10 % more steps than the best
    scale of a fine grid (the step count is very sensitive to the scale: 3x too large costs about 3x the steps)."""
    G, V, lam = _block(feats, block)
    tol = 1e-6
    best, best_scale = fewest_steps(G, V, lam, tol)
    auto, too_large = steps_to(G, V, lam, [float(auto_scale(torch.from_numpy(G), torch.tensor(lam))),
                                           3 * best_scale], tol)
    assert np.isfinite(best) and best > 10
    assert auto <= 1.1 * best + 1, (auto, best, best_scale)
    assert too_large > 2 * best  # the grid's range matters: the check can fail


def test_eigenvalue_estimates_bound_the_spectrum(feats):
    """lambda_max(G^T G / n): exact from the small Gram matrix; the power iteration's Rayleigh quotient is a lower
    bound close to it; the trace bound is an upper bound of lambda_max(H)."""
    train, _ = feats
    for g in train.grads:
        G = g.double()
        lam = (G * G).mean() / 10
        top_gn = float(np.linalg.eigvalsh((G.T @ G / G.shape[0]).numpy()).max())
        assert float(top_eigenvalue_gn(G)) == pytest.approx(top_gn, rel=1e-10)
        est = float(power_iteration_gn(G))
        assert 0.97 * top_gn <= est <= top_gn * (1 + 1e-12)
        assert float(trace_bound(G, lam)) >= top_gn + float(lam)


def test_top_eigenvalue_falls_back_to_power_iteration():
    G = torch.randn(30, 50, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = float(torch.linalg.eigvalsh(G @ G.T / 30).max())
    assert float(top_eigenvalue_gn(G, exact_max=10)) == pytest.approx(exact, rel=0.03)


def test_lissa_restarts_when_the_estimate_is_too_low(feats, monkeypatch):
    """A too-low lambda_max estimate makes the default scale diverge; the block restarts with a doubled scale."""
    import engine.scoring.methods.lissa as L

    train, test = feats
    G, V = train.grads[2].double(), test.grads[2].double()
    true_top = torch.linalg.eigvalsh(G.T @ G / G.shape[0]).max()
    monkeypatch.setattr(L, "top_eigenvalue_gn", lambda G: 0.2 * true_top)
    info = {}
    Q = L.precondition_lissa(G, V, info=info, solver="iterative")
    assert info["status"] == "converged restarted"
    assert info["scale"] > float(true_top) / 2
    Q_exact = precondition_exact(G, V)
    assert float(((Q - Q_exact).norm(dim=1) / Q_exact.norm(dim=1)).max()) <= 1e-4


@pytest.mark.parametrize("solver", ["iterative", "spectral"])
@pytest.mark.parametrize("block", [0, 1, 2])
def test_converged_lissa_is_within_tol_of_the_exact_ihvp(feats, solver, block):
    """The converging variant's promise, checked against an explicit solve: its iHVP is within ``tol`` of the
    exact one (the error bound holds)."""
    G, V, lam = _block(feats, block)
    for tol in (1e-4, 1e-8):
        info = {}
        Q = precondition_lissa(torch.from_numpy(G), torch.from_numpy(V), tol=tol, info=info, solver=solver)
        assert info["status"] == "converged" and info["error_bound"] <= tol
        assert _error(Q.numpy(), _solution(G, V, lam)[0]) <= tol


@pytest.mark.parametrize("solver", ["iterative", "spectral"])
@pytest.mark.parametrize("block", [1, 2])
def test_converged_lissa_takes_few_steps(feats, solver, block):
    """The steps it took are at least the fewest any scale needs and within a factor 2 of them: it stops on a
    bound, which over-estimates the error, not on the error itself."""
    G, V, lam = _block(feats, block)
    tol = 1e-6
    info = {}
    precondition_lissa(torch.from_numpy(G), torch.from_numpy(V), tol=tol, info=info, solver=solver)
    best, _ = fewest_steps(G, V, lam, tol)
    assert best <= info["iterations"] <= 2 * best, (info["iterations"], best)


def test_fixed_iterations_run_exactly_that_many_steps(feats):
    G, V, lam = _block(feats, 1)
    info = {}
    Q = precondition_lissa(torch.from_numpy(G), torch.from_numpy(V), iterations=7, info=info, solver="iterative")
    assert info["status"] == "fixed" and info["iterations"] == 7
    s = info["scale"]
    h = V.copy()
    H = _solution(G, V, lam)[1]
    for _ in range(7):
        h = V + h - h @ H / s
    np.testing.assert_allclose(Q.numpy(), h / s, rtol=1e-12, atol=1e-12 * np.abs(h / s).max())


def test_lissa_warns_when_not_converged(feats):
    train, test = feats
    with pytest.warns(RuntimeWarning, match="did not reach"):
        get_method("lissa")(train, test, max_iter=3)


def test_lissa_converged_run_is_silent(feats):
    train, test = feats
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_method("lissa")(train, test)


def test_lissa_diverging_scale_is_an_error():
    from engine.errors import InputError

    train, test = make_features(4)
    with pytest.raises(InputError, match="diverged"):
        get_method("lissa")(train, test, scale=1e-3, max_iter=100000)


def test_float32_rounding_floor_is_not_mistaken_for_divergence(feats):
    """An unreachable tol in float32 ends at max_iter (with a warning), without a spurious restart."""
    train, test = feats
    info = {}
    with pytest.warns(RuntimeWarning, match="did not reach"):
        precondition_lissa(train.grads[2], test.grads[2], tol=1e-14, max_iter=3000, info=info, solver="iterative")
    assert info["status"] == "max_iter" and info["iterations"] == 3000


@pytest.mark.parametrize("steps", [0, 1, 3, 40])
@pytest.mark.parametrize("scale", [None, 50.0])
def test_spectral_closed_form_equals_the_recursion(feats, steps, scale):
    """The closed form f_T(H) v is exactly the T-step iterate, for d <= n and n < d blocks alike."""
    train, test = feats
    a = get_method("lissa")(train, test, iterations=steps, scale=scale, solver="spectral")
    b = get_method("lissa")(train, test, iterations=steps, scale=scale, solver="iterative")
    assert rel_err(a, b) < 1e-9
    if scale is not None:
        assert rel_err(a, lissa_loop(train, test, steps, scale)) < 1e-9


def test_spectral_capped_steps_warn(feats):
    train, test = feats
    with pytest.warns(RuntimeWarning, match="did not reach"):
        get_method("lissa")(train, test, tol=1e-12, max_iter=2, solver="spectral")
