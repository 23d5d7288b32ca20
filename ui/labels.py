"""What the pages show where a label metric would be for a run whose data has no labels: the plain words
:data:`NEEDS_LABELS`, never NaN as a number. Which runs have labels: ``store.run_labelled`` /
``store.unlabelled_runs``; which metric columns need them: ``engine.evaluation.metrics.LABEL_METRICS``."""

from __future__ import annotations

import pandas as pd

from engine.evaluation.metrics import LABEL_METRICS

NEEDS_LABELS = "needs labels"
NO_GROUND_TRUTH = ("This run's data has no labels, so there is no ground truth to judge the methods by: Acc@1, "
                   "Coverage@k, AUPRC and the same-label marks need labels.")


def label_columns(df: pd.DataFrame, extra: tuple[str, ...] = ()) -> list[str]:
    """The columns of ``df`` that need labels: :data:`LABEL_METRICS`, their interval bounds, and ``extra``."""
    return [c for c in df.columns if c in LABEL_METRICS or c in extra]


def without_label_metrics(df: pd.DataFrame, extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """A copy of ``df`` (rows of an unlabelled run) with every label column (:func:`label_columns`) holding the text
    :data:`NEEDS_LABELS` instead of NaN."""
    out = df.copy()
    for c in label_columns(out, extra):
        out[c] = NEEDS_LABELS
    return out


def method_board(methods: list[str], agreement: pd.DataFrame, lds: pd.DataFrame | None = None,
                 stability: pd.DataFrame | None = None) -> pd.DataFrame:
    """The leaderboard of a run without labels: one row per method with what judges it without ground truth.

    agreement: ``store.agreement`` rows at one checkpoint (method_a, method_b, spearman, overlap): each method's
    mean Spearman and top-k overlap with every other method (agreement is not correctness: methods can agree on
    the wrong samples). lds: ``retrain_lds`` rows (method, lds, lds_lo, lds_hi) when the retraining analysis ran —
    then the rows are ranked by LDS, the one ground truth a run without labels has. stability: rows (method,
    stability) from the stability analysis. Columns: method, [lds, lds_lo, lds_hi], agreement_spearman,
    agreement_overlap, [stability]."""
    both = pd.concat([agreement.rename(columns={"method_a": "method", "method_b": "other"}),
                      agreement.rename(columns={"method_b": "method", "method_a": "other"})])
    mean = both.groupby("method")[["spearman", "overlap"]].mean()
    out = pd.DataFrame({"method": methods})
    out["agreement_spearman"] = out.method.map(mean.spearman)
    out["agreement_overlap"] = out.method.map(mean.overlap)
    if stability is not None and not stability.empty:
        out = out.merge(stability[["method", "stability"]], on="method", how="left")
    if lds is not None and not lds.empty:
        out = out.merge(lds[["method", "lds", "lds_lo", "lds_hi"]], on="method", how="left")
        return out.sort_values(["lds", "method"], ascending=[False, True], na_position="last",
                               kind="stable").reset_index(drop=True)
    return out.sort_values("method", kind="stable").reset_index(drop=True)


def has_label(value) -> bool:
    """Whether a sample's label (a store value: NULL arrives as None or NaN) is there."""
    return value is not None and not (isinstance(value, float) and value != value)
