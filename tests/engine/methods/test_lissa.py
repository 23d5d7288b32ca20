import warnings

import numpy as np
import pytest
import torch

from ._helpers import make_features, np_blocks, np_damping, rel_err
from engine.methods import get_method
from engine.methods.exact import precondition_exact
from engine.methods.lissa import (
    auto_scale,
    power_iteration_gn,
    precondition_lissa,
    top_eigenvalue_gn,
    trace_bound,
)


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


def test_auto_scale_is_the_optimal_step(feats):
    """Default scale = (1.02 lambda_max + lambda) / 2: above lambda_max / 2, so the recursion converges."""
    train, _ = feats
    for g in train.grads:
        G = g.double()
        lam = (G * G).mean() / 10
        top_gn = float(torch.linalg.eigvalsh(G.T @ G / G.shape[0]).max())
        assert float(top_eigenvalue_gn(G)) == pytest.approx(top_gn, rel=1e-10)
        est = float(power_iteration_gn(G))  # Rayleigh quotient: a lower bound that gets close
        assert 0.97 * top_gn <= est <= top_gn * (1 + 1e-12)
        s = float(auto_scale(G, lam))
        assert s == pytest.approx((1.02 * (top_gn + float(lam)) + float(lam)) / 2, rel=1e-10)
        assert s > (top_gn + float(lam)) / 2
        assert float(trace_bound(G, lam)) >= top_gn + float(lam)


def test_top_eigenvalue_falls_back_to_power_iteration():
    G = torch.randn(30, 50, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = float(torch.linalg.eigvalsh(G @ G.T / 30).max())
    assert float(top_eigenvalue_gn(G, exact_max=10)) == pytest.approx(exact, rel=0.03)


def test_lissa_restarts_when_the_estimate_is_too_low(feats, monkeypatch):
    """A too-low lambda_max estimate makes the default scale diverge; the block restarts with a doubled scale."""
    import engine.methods.lissa as L

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


def test_lissa_info(feats):
    train, test = feats
    info = {}
    precondition_lissa(train.grads[1].double(), test.grads[1].double(), info=info, solver="iterative")
    assert info["status"] == "converged" and info["error_bound"] < 1e-4
    assert info["iterations"] % 10 == 0 and 0 < info["iterations"] < 10000
    info = {}
    precondition_lissa(train.grads[1].double(), test.grads[1].double(), iterations=7, info=info,
                       solver="iterative")
    assert info["status"] == "fixed" and info["iterations"] == 7


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


def test_spectral_converged_reaches_exact_and_reports_steps(feats):
    train, test = feats
    G, V = train.grads[2].double(), test.grads[2].double()  # d=40 > n=12: the Gram path
    info = {}
    Q = precondition_lissa(G, V, tol=1e-6, solver="spectral", info=info)
    Q_exact = precondition_exact(G, V)
    assert info["status"] == "converged" and info["error_bound"] <= 1e-6 and info["iterations"] > 10
    assert float(((Q - Q_exact).norm(dim=1) / Q_exact.norm(dim=1)).max()) <= 1e-6
    # one step fewer would not have met the bound: the step count is the smallest that does
    rho = (info["error_bound"]) ** (1 / (info["iterations"] + 1))
    assert rho ** info["iterations"] > 1e-6


def test_spectral_capped_steps_warn(feats):
    train, test = feats
    with pytest.warns(RuntimeWarning, match="did not reach"):
        get_method("lissa")(train, test, tol=1e-12, max_iter=2, solver="spectral")
