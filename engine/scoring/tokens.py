"""Token-level attribution: which tokens of a training sample carry its score for a test sample.

For a LoRA block l (weight W [out, in]) the per-sample gradient is a sum over positions,
``g_il = sum_t dy_t x_t^T`` (:func:`engine.features.grads.token_gradients`), and every gradient method scores
``s(z_i, z') = sum_l <Q_l, T_l(g_i)>`` with its query ``Q_l`` (the preconditioned test gradient, from the method's
two-phase form) and training side ``T_l``. When ``T`` is linear in ``g_i`` (``engine.catalog.methods``: ``tokens =
"linear"``: GradSim, DataInf, LiSSA, exact, EK-FAC, K-FAC, TracIn summed over its checkpoints, the projected
GradSim/DataInf), training token t's share is

    c_t = sum_l <Q_l, T_l(g_ilt)>        (for T = identity: c_t = sum_l dy_t^T Q_l x_t, Q_l as [out, in])

and ``sum_t c_t = s(z_i, z')`` exactly. Gradient cosine (``tokens = "unit:<m>"``) divides by the sample's norm,
which is not a sum over tokens; its shares are method ``<m>``'s divided by that norm, ``c_t = <Q, L(g_it)> /
||L(g_i)||``, which again sum to the score. Representation methods (RepSim, RepT: one vector at the last prompt
token) and the baselines have no such split (:func:`engine.scoring.token_files.no_token_view`).

A share is what the training loss gains through the adapter's action on token t's activations; positive shares
push the score up (the token makes the sample look responsible). Sign: as every score, larger = more responsible.

:func:`engine.pipeline.tokens.attribute_tokens` recomputes, from a run folder, what the run scored with and
calls :func:`token_shares` for every chosen training sample.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from engine.catalog.methods import method_info, params_dict
from engine.errors import InputError
from engine.features.types import Features
from engine.scoring.methods import get_method
from engine.scoring.methods._common import dot_queries
from engine.scoring.token_files import no_token_view

# ---------------------------------------------------------------------------------------------- the split


def token_side(name: str, p, tokens: Features) -> list[torch.Tensor]:
    """Training-side blocks of the per-token rows of ONE training sample, ``[T, d'_l]`` each, whose sum over rows
    is the method's training side of that sample.

    ``tokens``: Features whose rows are the sample's per-token gradients (``grads`` at the scored checkpoint;
    ``history`` at every checkpoint for TracIn). ``p``: the method's parameter object.
    """
    info = method_info(name)
    if info.tokens == "linear":
        return get_method(name).train_side(tokens, p)
    base = info.linear_part
    if base is None:
        raise InputError(f"method {name!r}: {no_token_view(name)}")
    rows = get_method(base).train_side(tokens, method_info(base).make(params_dict(p)))
    norm = math.sqrt(sum(float(r.sum(0).square().sum()) for r in rows))  # ||L(g_i)||, g_i = sum of the rows
    return [r / norm if norm > 0 else torch.zeros_like(r) for r in rows]


def token_shares(name: str, p, queries: list[torch.Tensor], tokens: Features) -> np.ndarray:
    """``[m, T]`` float64: training token t's share of the score for each of the m queries (test samples);
    rows sum to the pair scores. ``queries``: the method's query phase ``queries(train_data, test, p)``."""
    T = token_side(name, p, tokens)
    return dot_queries(queries, [t.to(device=queries[0].device, dtype=queries[0].dtype) for t in T])


def token_pieces(tok, ids: list[int]) -> list[str]:
    """The text of each token: ``decode(ids[:t + 1])`` minus ``decode(ids[:t])``, so the pieces join to the decoded
    text (a character split over several byte tokens shows on the last of them)."""
    pieces, before = [], ""
    for t in range(len(ids)):
        now = tok.decode(ids[: t + 1], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        pieces.append(now[len(before):] if now.startswith(before) else tok.decode([ids[t]], skip_special_tokens=False))
        before = now
    return pieces
