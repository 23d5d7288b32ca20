"""Numerical self-checks of a run: figures that catch silent numerical failure, stored with the run.

Three kinds of check (rows of the ``checks`` table, :mod:`engine.runfolder.runformat`), each against a threshold:

- ``padding``: per-sample gradients of a few training samples taken one at a time (no padding) and together in
  one right-padded batch, as the features stage takes them. Per sample: the cosine of the two gradients (all
  LoRA blocks) and their max relative difference ``max|a - b| / max|b|``. Padding must not change a gradient:
  a model that lets pad tokens leak into attention, or a loss that counts them, shows here.
- ``bf16`` (only when the run computes in bfloat16): GradSim and RepSim score rows of a few test samples against
  a subset of training samples, from the bfloat16 model and from a float32 copy of it (same weights, float32
  arithmetic): the Spearman correlation per row. bfloat16 keeps 8 bits of mantissa; scores whose ranking it
  scrambles are noise.
- ``finite``: per method and scored checkpoint, the share of finite entries of the score matrix.

A row passes when ``value op threshold`` holds (``op`` is ``>=`` or ``<=``); the thresholds are below.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from engine.evaluation import metrics
from engine.features.grads import sample_features

# (float32 run, bfloat16 run): batched and alone agree to float32 rounding (~1e-6 relative) in float32; in
# bfloat16 the batched matmuls round differently (~1e-2), which is the precision, not a padding fault
PADDING_COSINE = {"float32": 0.9999, "bfloat16": 0.99}
PADDING_REL_DIFF = {"float32": 1e-3, "bfloat16": 5e-2}
BF16_SPEARMAN = 0.9
FINITE_SHARE = 1.0


@dataclass(frozen=True)
class CheckRow:
    kind: str
    subject: str
    checkpoint: int
    metric: str
    value: float
    op: str
    threshold: float
    note: str = ""

    @property
    def passed(self) -> bool:
        if not np.isfinite(self.value):
            return False
        return self.value >= self.threshold if self.op == ">=" else self.value <= self.threshold

    def as_dict(self) -> dict:
        return {"kind": self.kind, "subject": self.subject, "checkpoint": self.checkpoint, "metric": self.metric,
                "value": float(self.value), "op": self.op, "threshold": float(self.threshold),
                "passed": self.passed, "note": self.note}


def spread_ids(lengths: list[int], k: int) -> list[int]:
    """``k`` sample ids spread over the length order (shortest to longest), so one batch of them is padded."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    if len(order) <= k:
        return order
    return [order[round(q * (len(order) - 1) / (k - 1))] for q in range(k)] if k > 1 else [order[-1]]


def _flat(grads: list[torch.Tensor], row: int) -> torch.Tensor:
    return torch.cat([g[row].double() for g in grads])


def padding_rows(model, samples: list, pad_id: int, device, checkpoint: int, k: int, dtype: str) -> list[CheckRow]:
    """The ``padding`` check on ``k`` training samples spread over the lengths (see the module docstring)."""
    ids = spread_ids([len(s.input_ids) for s in samples], k)
    picked = [samples[i] for i in ids]
    together = sample_features(model, picked, pad_id, device, batch_size=len(picked), progress=False)
    longest = max(len(s.input_ids) for s in picked)
    rows = []
    for r, i in enumerate(ids):
        alone = sample_features(model, [samples[i]], pad_id, device, batch_size=1, progress=False)
        a, b = _flat(together.grads, r), _flat(alone.grads, 0)
        denom = float(a.norm() * b.norm())
        cos = float(a @ b) / denom if denom > 0 else float("nan")
        rel = float((a - b).abs().max() / b.abs().max()) if float(b.abs().max()) > 0 else float("nan")
        n = len(samples[i].input_ids)
        subject = f"train {i}"
        note = f"{n} tokens, padded to {longest} in the batch" if n < longest else f"{n} tokens, the longest"
        rows.append(CheckRow("padding", subject, checkpoint, "cosine", cos, ">=", PADDING_COSINE[dtype], note))
        rows.append(CheckRow("padding", subject, checkpoint, "max_rel_diff", rel, "<=", PADDING_REL_DIFF[dtype], note))
    return rows


def bf16_rows(model, train: list, test: list, pad_id: int, device, checkpoint: int, n_rows: int, n_cols: int,
              batch_size: int) -> list[CheckRow]:
    """The ``bf16`` check: GradSim and RepSim rows of the first ``n_rows`` test samples over ``n_cols`` training
    samples spread over the set, from ``model`` as it is (bfloat16) and in float32 (:func:`in_float32`)."""
    cols = np.linspace(0, len(train) - 1, min(n_cols, len(train))).round().astype(int).tolist()
    rows_ = list(range(min(n_rows, len(test))))
    subset = [train[i] for i in cols]
    queries = [test[j] for j in rows_]
    def rows_of(m):
        tr = sample_features(m, subset, pad_id, device, batch_size, progress=False)
        te = sample_features(m, queries, pad_id, device, batch_size, progress=False)
        grad = sum(v.double() @ g.double().T for v, g in zip(te.grads, tr.grads))
        unit = lambda x: x.double() / x.double().norm(dim=1, keepdim=True).clamp_min(1e-30)  # noqa: E731
        return {"gradsim": grad.numpy(), "repsim": (unit(te.reps) @ unit(tr.reps).T).numpy()}

    out = {"bf16": rows_of(model)}
    with in_float32(model):
        out["f32"] = rows_of(model)
    rows = []
    for method in ("gradsim", "repsim"):
        rho = metrics.spearman_rows(out["bf16"][method], out["f32"][method])
        for j, r in zip(rows_, rho):
            rows.append(CheckRow("bf16", f"{method} test {j}", checkpoint, "spearman", float(r), ">=", BF16_SPEARMAN,
                                 f"over {len(cols)} training samples"))
    return rows


@contextmanager
def in_float32(model):
    """``model`` with every floating parameter and buffer in float32 for the duration (the same, already rounded
    weights; float32 arithmetic), then back to each one's own dtype. bfloat16 -> float32 -> bfloat16 is exact,
    and no second copy of the model is kept."""
    saved = {id(t): t.dtype for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()}
    model.float()
    try:
        yield model
    finally:
        for t in (*model.parameters(), *model.buffers()):
            if id(t) in saved and t.dtype != saved[id(t)]:
                t.data = t.data.to(saved[id(t)])


def finite_rows(matrices: dict[str, np.ndarray], checkpoint: int) -> list[CheckRow]:
    """The ``finite`` check of every method's score matrix at one checkpoint, one matrix held at a time (a
    ScoreMatrices reads each from the score files on access)."""
    return [_finite_row(method, np.asarray(matrices[method]), checkpoint) for method in sorted(matrices)]


def _finite_row(method: str, S: np.ndarray, checkpoint: int) -> CheckRow:
    share = float(np.isfinite(S).mean()) if S.size else float("nan")
    bad = int(S.size - np.isfinite(S).sum())
    return CheckRow("finite", method, checkpoint, "finite_share", share, ">=", FINITE_SHARE,
                    f"{bad} of {S.size} scores not finite" if bad else f"all {S.size} scores finite")
