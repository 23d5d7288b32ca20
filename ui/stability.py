"""What the pages show of the stability check (``engine.analysis.stability``; tables ``stability`` and
``stability_methods``): the warnings on unstable methods, the per-perturbation table and its chart. No torch, no
SQL: the rows come from ``store.analysis_table``."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from engine.catalog.analyses import STABILITY_PERTURBATIONS, STABILITY_WARN, stability_warning
from engine.evaluation.metrics import unstable_methods
from ui.common import esc


def what_changes(perturbation: str) -> str:
    """The setting a perturbation changes, as the warning names it ("the projection seed")."""
    return STABILITY_PERTURBATIONS.get(perturbation, (perturbation, False))[0]


def stability_warnings(rows: pd.DataFrame) -> list[str]:
    """One sentence per method whose stability is under ``STABILITY_WARN`` (``engine.evaluation.metrics.
    unstable_methods``, ``engine.catalog.analyses.stability_warning``), naming every perturbation that should not
    matter and still moves its top k below it, worst first. ``rows``: ``stability`` rows (method, perturbation,
    should_matter, overlap)."""
    if rows.empty:
        return []
    return [stability_warning(f"**{esc(method)}**", stability, moving)
            for method, stability, moving in unstable_methods(rows.to_dict("records"), STABILITY_WARN)]


def stability_column(summary: pd.DataFrame) -> dict[str, float]:
    """method -> stability, from ``stability_methods`` rows (empty when the check did not run)."""
    return {} if summary.empty else dict(zip(summary.method, summary.stability.astype(float)))


def perturbation_table(rows: pd.DataFrame, figure: str = "overlap") -> pd.DataFrame:
    """Methods × perturbations of one figure (``overlap`` or ``spearman``), perturbations in their catalog order;
    NaN where a perturbation does not apply to a method."""
    grid = rows.pivot_table(index="method", columns="perturbation", values=figure, aggfunc="first")
    return grid[[p for p in STABILITY_PERTURBATIONS if p in grid.columns]]


def perturbation_chart(rows: pd.DataFrame) -> go.Figure:
    """Top-k overlap per method and perturbation (grouped horizontal bars), the warning threshold as a line; the
    reference (a change that should matter) drawn hatched."""
    data = rows.assign(setting=[p + (" (reference)" if m else "") for p, m in zip(rows.perturbation,
                                                                                   rows.should_matter)],
                       changes=[what_changes(p) for p in rows.perturbation])
    order = sorted(data.method.unique())
    fig = px.bar(data, y="method", x="overlap", color="setting", barmode="group", orientation="h",
                 category_orders={"method": order}, range_x=[0, 1.05],
                 hover_data={"changes": True, "spearman": ":.3f", "source": True, "note": True},
                 labels={"overlap": "top-k overlap with the run's own setting", "setting": "changed"})
    fig.add_vline(x=STABILITY_WARN, line_dash="dot", annotation_text=f"warning below {STABILITY_WARN:g}",
                  annotation_position="top")
    fig.update_layout(height=120 + 22 * len(data), margin=dict(l=10, r=10, t=60, b=10), yaxis_title=None,
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0, title=None))
    return fig
