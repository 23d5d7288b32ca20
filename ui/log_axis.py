"""Readable tick labels for plotly log axes (pure function, unit-tested)."""

from __future__ import annotations

import numpy as np


def log_ticks(values) -> dict:
    """Tick values and labels for a log axis over ``values``: powers of ten when they span two decades or more,
    else 1-2-5 steps (plotly's own minor labels crowd, and a single decade would show one tick)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if not len(v):
        return {}
    lo, hi = float(v.min()), float(v.max())
    span = np.log10(hi / lo) if hi > lo else 0.0
    mantissas = (1,) if span >= 2 else (1, 2, 5) if span >= 0.7 else (1, 1.5, 2, 3, 5, 7)
    ticks = [m * 10.0 ** e for e in range(int(np.floor(np.log10(lo))) - 1, int(np.ceil(np.log10(hi))) + 1)
             for m in mantissas if lo / 1.6 <= m * 10.0 ** e <= hi * 1.6]
    return {"tickvals": ticks, "ticktext": [f"{t:g}" if 1e-3 <= t < 1e4 else f"{t:.0e}" for t in ticks]}


def worth_log(values, decades: float = 0.5) -> bool:
    """Whether ``values`` (the positive, finite ones) span at least ``decades`` powers of ten: below that a log
    axis shows one tick or none inside the data (e.g. relative errors between 0.99 and 1.2), a linear one reads."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return bool(len(v)) and float(np.log10(v.max() / v.min())) >= decades
