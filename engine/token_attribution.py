"""Token-level attribution: which tokens of a training sample carry its score for a test sample.

For a LoRA block l (weight W [out, in]) the per-sample gradient is a sum over positions,
``g_il = sum_t dy_t x_t^T`` (:func:`engine.grads.token_gradients`), and every gradient method scores
``s(z_i, z') = sum_l <Q_l, T_l(g_i)>`` with its query ``Q_l`` (the preconditioned test gradient, from the method's
two-phase form) and training side ``T_l``. When ``T`` is linear in ``g_i`` (``engine.catalog``: ``tokens =
"linear"``: GradSim, DataInf, LiSSA, exact, EK-FAC, K-FAC, TracIn summed over its checkpoints, the projected
GradSim/DataInf), training token t's share is

    c_t = sum_l <Q_l, T_l(g_ilt)>        (for T = identity: c_t = sum_l dy_t^T Q_l x_t, Q_l as [out, in])

and ``sum_t c_t = s(z_i, z')`` exactly. Gradient cosine (``tokens = "unit:<m>"``) divides by the sample's norm,
which is not a sum over tokens; its shares are method ``<m>``'s divided by that norm, ``c_t = <Q, L(g_it)> /
||L(g_i)||``, which again sum to the score. Representation methods (RepSim, RepT: one vector at the last prompt
token) and the baselines have no such split (:func:`engine.token_files.no_token_view`).

A share is what the training loss gains through the adapter's action on token t's activations; positive shares
push the score up (the token makes the sample look responsible). Sign: as every score, larger = more responsible.

:func:`attribute_tokens` recomputes, from a run folder, what the run scored with: the same features (the
pipeline's stages) at the checkpoint, the queries of every method, and the per-token gradient rows of the chosen
training samples; it writes one :class:`engine.token_files.TokenResult` per training sample.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from engine.catalog import method_info, params_dict
from engine.errors import InputError
from engine.methods import Features, get_method
from engine.methods._common import dot_queries
from engine.token_files import TokenResult, manifest_id, no_token_view, result_path

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- the split


def token_side(name: str, p, tokens: Features) -> list[torch.Tensor]:
    """Training-side blocks of the per-token rows of ONE training sample, ``[T, d'_l]`` each, whose sum over rows
    is the method's training side of that sample.

    ``tokens``: Features whose rows are the sample's per-token gradients (``grads`` at the scored checkpoint;
    ``history`` at every checkpoint for TracIn). ``p``: the method's parameter object.
    """
    info = method_info(name)
    if info.tokens == "linear":
        return get_method(name).train_blocks(tokens, 0, tokens.n, p)
    base = info.linear_part
    if base is None:
        raise InputError(f"method {name!r}: {no_token_view(name)}")
    rows = get_method(base).train_blocks(tokens, 0, tokens.n, method_info(base).make(params_dict(p)))
    norm = math.sqrt(sum(float(r.sum(0).square().sum()) for r in rows))  # ||L(g_i)||, g_i = sum of the rows
    return [r / norm if norm > 0 else torch.zeros_like(r) for r in rows]


def token_shares(name: str, p, queries: list[torch.Tensor], tokens: Features) -> np.ndarray:
    """``[m, T]`` float64: training token t's share of the score for each of the m queries (test samples);
    rows sum to the pair scores. ``queries``: the method's ``prepare(train, test, p)``."""
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


# ---------------------------------------------------------------------------------------------- from a run folder


def _say(progress: bool):
    if progress:
        return lambda msg: print(msg, file=sys.stderr, flush=True)
    return log.info


def _run_task(folder: Path, name: str):
    """The run's samples as TaskData (from samples.parquet: the run's own copy of its data)."""
    from engine.tasks.base import Sample, TaskData

    df = pq.read_table(folder / "samples.parquet").to_pandas().sort_values(["split", "sample_id"])
    split = {s: tuple(Sample(r.prompt, r.response, r.label) for r in df[df.split == s].itertuples())
             for s in ("train", "test")}
    return TaskData(name, split["train"], split["test"])


def _stored_scores(folder: Path, method: str, checkpoint: int, train_id: int, n_test: int) -> list[float]:
    """The run's own scores of training sample ``train_id`` for every test sample (NaN where missing)."""
    out = [float("nan")] * n_test
    files = sorted((folder / "scores").glob(f"{method}-ckpt{checkpoint}*.parquet"))
    for f in files:
        t = pq.read_table(f, columns=["method", "checkpoint", "test_id", "train_id", "score"],
                          filters=[("method", "=", method), ("checkpoint", "=", checkpoint),
                                   ("train_id", "=", train_id)])
        for j, s in zip(t.column("test_id").to_pylist(), t.column("score").to_pylist()):
            if 0 <= j < n_test:
                out[j] = float(s)
    return out


def attribute_tokens(folder: Path, checkpoint: int, train_ids: list[int], tokens_dir: Path,
                     methods: list[str] | None = None, device: str | None = None,
                     progress: bool = False) -> list[Path]:
    """Token shares of training samples ``train_ids`` at ``checkpoint`` of the run in ``folder``, for every test
    sample and every method of the run (or ``methods``); one result file per training sample (returned).

    Recomputes the run's features with its own spec (model, adapter state from ``checkpoints/epoch-<c>/``,
    encoding, batch and shard sizes), so the shares sum to the run's scores up to float32 rounding.
    """
    from safetensors.torch import load_file

    from engine.distributed import Dist
    from engine.feature_cache import TensorLRU
    from engine.features import PassSettings, ensure_features, load_checkpoint, method_features
    from engine.finetune import set_lora_state
    from engine.grads import token_gradients
    from engine.pipeline import ScoringMethod, encode_data, load_model, open_cache
    from engine.plan import plan_for
    from engine.runformat import CHECKPOINTS_DIR, read_manifest
    from engine.spec import spec_from_dict

    t0 = time.perf_counter()
    out = _say(progress)

    def say(msg: str) -> None:
        out(f"[{time.perf_counter() - t0:6.1f} s] {msg}")

    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        raise InputError(f"{folder} is not a complete run folder")
    if manifest.get("kind") != "pipeline":
        raise InputError(f"run {folder.name!r} holds imported scores: it has no model to take token gradients from")
    if checkpoint not in manifest.get("checkpoints", []):
        raise InputError(f"run {folder.name!r} has no scores at checkpoint {checkpoint}; scored checkpoints: "
                         f"{manifest.get('checkpoints')}")
    n_train, n_test = int(manifest["n_train"]), int(manifest["n_test"])
    bad = [i for i in train_ids if not 0 <= int(i) < n_train]
    if bad or not train_ids:
        raise InputError(f"training sample id(s) {bad or train_ids} not in 0..{n_train - 1}")
    names = list(methods or manifest["methods"])
    unknown = [m for m in names if m not in manifest["methods"]]
    if unknown:
        raise InputError(f"run {folder.name!r} has no scores of {unknown}; its methods: {manifest['methods']}")

    spec = spec_from_dict(manifest["spec"])
    if spec.model.adapter:  # the run folder holds its own copy of every adapter state
        last = folder / CHECKPOINTS_DIR / f"epoch-{max(manifest['checkpoints'])}"
        spec = replace(spec, model=replace(spec.model, adapter=str(last), checkpoints=()))
    if device is not None:
        spec = replace(spec, device=device)
    splitting = [ScoringMethod(m, spec.scoring.method_params(m)) for m in names if method_info(m).tokens]
    skipped = {m: no_token_view(m) for m in names if not method_info(m).tokens}
    if not splitting:
        raise InputError(f"none of {names} splits its scores over tokens: " + "; ".join(
            f"{m}: {why}" for m, why in skipped.items()))
    plan = plan_for({m.name: m.params for m in splitting})
    weights = {int(ci["checkpoint"]): float(ci["lr_weight"]) for ci in manifest["checkpoint_info"]}

    say(f"loading {spec.model.name} and the data of run {folder.name}")
    task = _run_task(folder, manifest.get("task", folder.name))
    lm = load_model(spec)
    data = encode_data(task, lm, spec.train)
    settings = PassSettings(lm.device, lm.tok.pad_token_id, spec.scoring.grad_batch_size, spec.scoring.shard_size,
                            progress=False)
    # the pipeline's own features stage, through the feature cache: a run that kept its cache (scoring.feature_cache:
    # keep) is read back instead of recomputed; a cache made here goes away after, unless the spec keeps caches
    dist, lru = Dist(), TensorLRU(spec.scoring.feature_memory_mb << 20)
    cache = open_cache(spec, task, lm, folder.parent)
    made_here = not any(cache.folder.glob("ckpt-*"))
    history, rows = [], {}
    now = None
    for c in plan.checkpoints([checkpoint]):
        say(f"gradients at checkpoint {c}")
        set_lora_state(lm.model, load_file(str(folder / CHECKPOINTS_DIR / f"epoch-{c}" / "adapter_model.safetensors")))
        lm.model.eval()
        ensure_features(cache, c, lm.model, data.train, data.test, settings, plan, dist, c == checkpoint)
        now = load_checkpoint(cache, c, weights[c], n_train, n_test, settings, plan, dist, lru, c == checkpoint)
        if plan.history:
            history.append(now)
        rows[c] = {i: token_gradients(lm.model, data.train[i], lm.tok.pad_token_id, lm.device)[0]
                   for i in train_ids}

    results = {i: TokenResult(run=folder.name, manifest=manifest_id(folder), checkpoint=checkpoint, train_id=i,
                              pieces=token_pieces(lm.tok, list(data.train[i].input_ids)),
                              token_ids=list(data.train[i].input_ids), prompt_len=data.train[i].prompt_len,
                              loss=[lab != -100 for lab in data.train[i].labels], skipped=dict(skipped))
               for i in train_ids}
    for m in splitting:
        say(f"token shares: {m.name}")
        train_x, test_x = method_features(m.proj_key, now, history)
        Q = get_method(m.name).prepare(train_x, test_x, m.params)
        for i in train_ids:
            tokens = Features(grads=rows[checkpoint][i], block_names=now.train.block_names,
                              history=tuple((h.weight, rows[h.checkpoint][i]) for h in history))
            S = token_shares(m.name, m.params, Q, tokens)
            results[i].shares[m.name] = S.tolist()
            results[i].scores[m.name] = S.sum(1).tolist()
            results[i].stored[m.name] = _stored_scores(folder, m.name, checkpoint, i, n_test)
    if made_here and spec.scoring.feature_cache == "delete":
        cache.remove()
    seconds = time.perf_counter() - t0
    paths = []
    for i, r in results.items():
        r.seconds = seconds
        path = result_path(tokens_dir, folder.name, r.manifest, checkpoint, i)
        r.write(path)
        paths.append(path)
    say(f"done: {len(paths)} training sample(s)")
    return paths
