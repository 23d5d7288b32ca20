"""``metagrad`` in the retraining analysis: exact metagradients (engine.model.replay) for the test prompts of
``analysis.metagrad_prompts``, taken before the retrainings so that its top k joins the counterfactual check and its
scores every LDS and prediction table beside the methods'.

The prompts are chosen by the counterfactual check's rule (engine.analysis.retrain.cf_prompts: spread over the
labels) with the same seed, so the counterfactual's prompts come first and every one of them that the count
reaches has metagrad. The replay fine-tunes once more with the run's recipe and checks that it lands on the
run's adapter bit for bit (else the metagradients would belong to another run: a warning, and ``reproduced`` is
false in the timings).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

import numpy as np

from engine.analysis.retrain import Context, cf_prompts
from engine.model.adapters import same_tensors
from engine.model.replay import metagradients, record

log = logging.getLogger(__name__)


class WithRows:
    """The run's score matrices (a dict, or the lazy engine.evaluation.tables.ScoreMatrices) with one more method's
    matrix beside them, read as they are read: iteration over names, ``in``, ``[name]``, ``items()``; nothing of
    the run's matrices is loaded before it is asked for."""

    def __init__(self, base, name: str, matrix: np.ndarray):
        self.base, self.name, self.matrix = base, name, matrix

    def __iter__(self):
        yield from self.base
        yield self.name

    def __len__(self):
        return len(self.base) + 1

    def __contains__(self, name):
        return name == self.name or name in self.base

    def __getitem__(self, name: str) -> np.ndarray:
        return self.matrix if name == self.name else self.base[name]

    def items(self):
        return ((m, self[m]) for m in self)


def metagrad_prompts(test_labels: Sequence, n: int, seed: int) -> list[int]:
    """The ``n`` test prompts that get metagrad (a prefix-extension of the counterfactual check's prompts)."""
    return cf_prompts(test_labels, n, seed) if n > 0 else []


def metagrad_matrix(ctx: Context, prompts: Sequence[int], seed: int,
                    progress: Callable[[str], None] | None = None) -> tuple[np.ndarray, list[dict], dict[str, float]]:
    """``(S, rows, timings)``: S [m_test, n_train] float64 with metagrad's scores on the rows of ``prompts`` and NaN
    elsewhere; rows of the ``retrain_metagrad`` table (test_id, train_id, score); timings: ``metagrad_record_s``
    (the recorded fine-tune), ``metagrad_reverse_s`` (the reverse sweep for all prompts), ``metagrad_s``,
    ``metagrad_prompts``, ``metagrad_state_mb`` (the recorded states) and ``metagrad_reproduced`` (1 when the
    replay's adapter is the run's, bit for bit)."""
    m, n = len(ctx.test_enc), len(ctx.train_enc)
    S = np.full((m, n), np.nan)
    if not prompts:
        return S, [], {}
    if progress:
        progress(f"metagrad: recording the fine-tune ({len(prompts)} prompts)")
    t0 = time.perf_counter()
    traj = record(ctx.model, ctx.train_enc, ctx.tok.pad_token_id, ctx.train_cfg, ctx.device, ctx.initial, seed)
    t1 = time.perf_counter()
    same = same_tensors(traj.final, ctx.original)
    if not same:
        log.warning("metagrad: the replayed fine-tune does not reproduce the run's adapter bit for bit, so its "
                    "metagradients describe a run that differs from this one by rounding or nondeterminism")
    rows_S = metagradients(ctx.model, traj, ctx.train_enc, ctx.test_enc, prompts, ctx.tok.pad_token_id, ctx.device,
                           progress)
    t2 = time.perf_counter()
    S[list(prompts)] = rows_S
    rows = [{"test_id": int(j), "train_id": i, "score": float(v)} for j, r in zip(prompts, rows_S)
            for i, v in enumerate(r)]
    return S, rows, {"metagrad_record_s": t1 - t0, "metagrad_reverse_s": t2 - t1, "metagrad_s": t2 - t0,
                     "metagrad_prompts": float(len(prompts)), "metagrad_state_mb": traj.nbytes / 2 ** 20,
                     "metagrad_reproduced": float(same)}
