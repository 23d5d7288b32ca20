"""The error random projection adds: each projected method's scores against its unprojected method's
(``MethodInfo.projects``), per projection size and seed. Used by ``bench/projection.py``."""

from __future__ import annotations

import numpy as np

from engine.catalog.methods import CATALOG, method_info
from engine.evaluation import metrics
from engine.scoring.methods import get_method

PROJECTED = tuple(name for name, info in CATALOG.items() if info.projects)  # gradsim_proj, gradcos_proj, ...


def projection_error(train, test, dims, seeds=(0, 1, 2), methods=PROJECTED, kind: str = "rademacher",
                     **params) -> list[dict]:
    """How far each projected method's scores are from its unprojected counterpart, per (method, k, seed).

    ``train``/``test``: :class:`engine.features.types.Features` with full gradients. ``params`` go to every method that
    takes them (e.g. ``lambda_c``). Rows: ``method``, ``k``, ``seed``, ``rel_frob`` = ||S_k - S||_F / ||S||_F,
    ``spearman`` = mean per-test-sample Spearman correlation of S_k and S, ``top1`` = share of test samples
    whose top-ranked training sample is the same (ranking rule of :mod:`engine.evaluation.metrics`), ``bytes_per_sample``
    = float32 bytes of one projected gradient (``full_bytes_per_sample`` for the unprojected one).
    """
    widths = [int(g.shape[1]) for g in train.grads]
    rows = []
    for name in methods:
        ref_m = get_method(method_info(name).projects)
        S = ref_m(train, test, **{k_: v for k_, v in params.items() if k_ in ref_m.defaults})
        top = metrics.ranking(S)[:, 0]
        norm = float(np.linalg.norm(S))
        proj_m = get_method(name)
        for k in dims:
            for seed in seeds:
                p = {k_: v for k_, v in params.items() if k_ in proj_m.defaults}
                S_k = proj_m(train, test, proj_dim=k, proj_seed=seed, proj_kind=kind, **p)
                rows.append({
                    "method": name, "k": k, "seed": seed,
                    "rel_frob": float(np.linalg.norm(S_k - S)) / norm if norm > 0 else float("nan"),
                    "spearman": metrics.agreement(S_k, S, k=1)["spearman"],
                    "top1": float(np.mean(metrics.ranking(S_k)[:, 0] == top)),
                    "bytes_per_sample": 4 * sum(min(k, d) for d in widths),
                    "full_bytes_per_sample": 4 * sum(widths),
                })
    return rows
