"""The numerical self-checks on the home page: a warning naming every run whose checks fail, and a run's figures
(``engine.evaluation.checks``: padding, bfloat16 vs float32, finite scores). No torch, no SQL."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import store
from ui.common import esc, md

KINDS = {
    "padding": "Per-sample gradients alone vs in a padded batch",
    "bf16": "bfloat16 vs float32 score rows (Spearman)",
    "finite": "Finite share of every score matrix",
}


def flag_failing(con) -> None:
    """A warning listing the runs with failed self-checks (nothing when every check passed)."""
    status = store.check_status(con)
    bad = status[status.n_failed > 0]
    if bad.empty:
        return
    lines = "; ".join(f"**{esc(r.run_id)}**: {int(r.n_failed)} of {int(r.n_checks)} failed ({md(r.failed)})"
                      for r in bad.itertuples())
    st.warning(f"⚠ Numerical self-checks fail — scores of these runs may be noise: {lines}. "
               "Open the run below for the figures.")


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per check kind: how many rows passed, and the worst value of each metric."""
    out = []
    for kind, g in rows.groupby("kind", sort=False):
        worst = []
        for metric, m in g.groupby("metric", sort=False):
            op = m.op.iloc[0]
            v = m.value.min() if op == ">=" else m.value.max()
            worst.append(f"{metric} {'min' if op == '>=' else 'max'} {v:.6g} (needs {op} {m.threshold.iloc[0]:.4g})")
        out.append({"check": KINDS.get(kind, kind), "passed": f"{int(g.passed.sum())} of {len(g)}",
                    "worst": "; ".join(worst), "ok": bool(g.passed.all())})
    return pd.DataFrame(out)


def show(con, run: str) -> None:
    """The run's self-check figures in an expander (open when a check failed)."""
    rows = store.checks(con, run)
    if rows.empty:
        st.caption(f"No numerical self-checks stored for {run} (written before they existed, or turned off "
                   "with checks.enabled: false).")
        return
    failed = int((~rows.passed.astype(bool)).sum())
    title = (f"Numerical self-checks of {run}: " + ("all passed" if not failed else f"{failed} FAILED")
             + f" ({len(rows)} figures)")
    with st.expander(title, expanded=bool(failed)):
        st.caption("padding: each sample's LoRA gradient taken alone and in one right-padded batch must agree "
                   "(cosine ≈ 1, max relative difference ≈ float32 rounding); bf16 (bfloat16 runs only): score "
                   "rows from the bfloat16 model and from its float32 copy must rank the training samples alike; "
                   "finite: every score is a number.")
        st.dataframe(summary(rows), hide_index=True, width="stretch", key="checks_summary",
                     column_config={"ok": st.column_config.CheckboxColumn("passed all")})
        st.dataframe(rows, hide_index=True, width="stretch", key="checks_rows",
                     column_config={"value": st.column_config.NumberColumn(format="%.6g"),
                                    "threshold": st.column_config.NumberColumn(format="%.4g")})
