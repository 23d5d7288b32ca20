"""The ``tokens`` command: token shares of chosen training samples, recomputed from a run folder.

:func:`attribute_tokens` takes what the run scored with (its spec, its adapter state at the checkpoint, the
pipeline's own features stage through the feature cache), the queries of every method and the per-token gradient
rows of the chosen training samples, and writes one :class:`engine.scoring.token_files.TokenResult` per training
sample; the math is :mod:`engine.scoring.tokens`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow.parquet as pq

from engine.catalog.methods import method_info
from engine.data.tasks.base import Sample, TaskData
from engine.errors import InputError
from engine.features.distributed import Dist
from engine.features.grads import token_gradients
from engine.features.plan import FeaturePlan, plan_for
from engine.features.stage import ensure_features, load_checkpoint, method_features
from engine.features.types import Features, as_train_data
from engine.model.finetune import set_lora_state
from engine.model.states import checkpoint_state, load_model
from engine.pipeline.stages import encode_data, open_cache, pass_settings, reload_spec, say, tensor_lru
from engine.runfolder.runformat import read_manifest
from engine.scoring.methods import get_method
from engine.scoring.methods.base import ScoringMethod
from engine.scoring.token_files import TokenResult, manifest_id, no_token_view, result_path
from engine.scoring.tokens import token_pieces, token_shares
from engine.spec.run_spec import RunSpec


def _run_task(folder: Path, name: str) -> TaskData:
    """The run's samples as TaskData (from samples.parquet: the run's own copy of its data)."""
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


@dataclass
class TokenRequest:
    """A checked request on a run folder: its manifest, the spec to recompute with, the methods that split their
    scores over tokens (``splitting``) and why the others do not (``skipped``)."""

    folder: Path
    manifest: dict
    spec: RunSpec
    checkpoint: int
    train_ids: list[int]
    splitting: list[ScoringMethod]
    skipped: dict[str, str]

    @property
    def n_train(self) -> int:
        return int(self.manifest["n_train"])

    @property
    def n_test(self) -> int:
        return int(self.manifest["n_test"])


def _request(folder: Path, checkpoint: int, train_ids: list[int], methods: list[str] | None,
             device: str | None) -> TokenRequest:
    """Check the run folder, the checkpoint, the ids and the methods before any work; an InputError names what is
    wrong."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise InputError(f"{folder} is not a complete run folder")
    if manifest.get("kind") != "pipeline":
        raise InputError(f"run {folder.name!r} holds imported scores: it has no model to take token gradients from")
    if checkpoint not in manifest.get("checkpoints", []):
        raise InputError(f"run {folder.name!r} has no scores at checkpoint {checkpoint}; scored checkpoints: "
                         f"{manifest.get('checkpoints')}")
    n_train = int(manifest["n_train"])
    bad = [i for i in train_ids if not 0 <= int(i) < n_train]
    if bad or not train_ids:
        raise InputError(f"training sample id(s) {bad or train_ids} not in 0..{n_train - 1}")
    names = list(methods or manifest["methods"])
    unknown = [m for m in names if m not in manifest["methods"]]
    if unknown:
        raise InputError(f"run {folder.name!r} has no scores of {unknown}; its methods: {manifest['methods']}")
    spec = reload_spec(folder, manifest)
    if device is not None:
        spec = replace(spec, device=device)
    splitting = [ScoringMethod(m, spec.scoring.method_params(m)) for m in names if method_info(m).tokens]
    skipped = {m: no_token_view(m) for m in names if not method_info(m).tokens}
    if not splitting:
        raise InputError(f"none of {names} splits its scores over tokens: " + "; ".join(
            f"{m}: {why}" for m, why in skipped.items()))
    return TokenRequest(folder, manifest, spec, checkpoint, list(train_ids), splitting, skipped)


def attribute_tokens(folder: Path, checkpoint: int, train_ids: list[int], tokens_dir: Path,
                     methods: list[str] | None = None, device: str | None = None,
                     progress: bool = False) -> list[Path]:
    """Token shares of training samples ``train_ids`` at ``checkpoint`` of the run in ``folder``, for every test
    sample and every method of the run (or ``methods``); one result file per training sample (returned).

    Recomputes the run's features with its own spec (model, adapter state from ``checkpoints/epoch-<c>/``,
    encoding, batch and shard sizes), so the shares sum to the run's scores up to float32 rounding.
    """
    t0 = time.perf_counter()
    out = say(progress)

    def step(msg: str) -> None:
        out(f"[{time.perf_counter() - t0:6.1f} s] {msg}")

    folder = Path(folder)
    req = _request(folder, checkpoint, train_ids, methods, device)
    spec = req.spec
    step(f"loading {spec.model.name} and the data of run {folder.name}")
    task = _run_task(folder, req.manifest.get("task", folder.name))
    lm = load_model(spec)
    data = encode_data(task, lm.tok, spec.train)
    # the pipeline's own features stage, through the feature cache: a run that kept its cache (scoring.feature_cache:
    # keep) is read back instead of recomputed; a cache made here goes away after, unless the spec keeps caches
    cache = open_cache(spec, task, lm, folder.parent)
    made_here = not any(cache.folder.glob("ckpt-*"))
    now, history, rows = _token_features(req, lm, data, cache, step)
    results = {i: TokenResult(run=folder.name, manifest=manifest_id(folder), checkpoint=checkpoint, train_id=i,
                              pieces=token_pieces(lm.tok, list(data.train[i].input_ids)),
                              token_ids=list(data.train[i].input_ids), prompt_len=data.train[i].prompt_len,
                              loss=[lab != -100 for lab in data.train[i].labels], skipped=dict(req.skipped))
               for i in req.train_ids}
    for m in req.splitting:
        step(f"token shares: {m.name}")
        train_x, test_x = method_features(m.proj_key, now, history)
        Q = get_method(m.name).queries(as_train_data(train_x), test_x, m.params)
        for i in req.train_ids:
            tokens = Features(grads=rows[checkpoint][i], block_names=now.train.block_names,
                              history=tuple((h.weight, rows[h.checkpoint][i]) for h in history))
            S = token_shares(m.name, m.params, Q, tokens)
            results[i].shares[m.name] = S.tolist()
            results[i].scores[m.name] = S.sum(1).tolist()
            results[i].stored[m.name] = _stored_scores(folder, m.name, checkpoint, i, req.n_test)
    if made_here and spec.scoring.feature_cache == "delete":
        cache.remove()
    seconds = time.perf_counter() - t0
    paths = []
    for i, r in results.items():
        r.seconds = seconds
        path = result_path(tokens_dir, folder.name, r.manifest, checkpoint, i)
        r.write(path)
        paths.append(path)
    step(f"done: {len(paths)} training sample(s)")
    return paths


def _token_features(req: TokenRequest, lm, data, cache, step):
    """The run's features at every checkpoint the splitting methods read (TracIn: its history), and the per-token
    gradient rows of the chosen training samples there: ``(now, history, rows[c][train_id])``."""
    spec, folder = req.spec, req.folder
    plan: FeaturePlan = plan_for({m.name: m.params for m in req.splitting})
    weights = {int(ci["checkpoint"]): float(ci["lr_weight"]) for ci in req.manifest["checkpoint_info"]}
    settings, dist, lru = pass_settings(spec, lm, progress=False), Dist(), tensor_lru(spec)
    history, rows = [], {}
    now = None
    for c in plan.checkpoints([req.checkpoint]):
        step(f"gradients at checkpoint {c}")
        set_lora_state(lm.model, checkpoint_state(folder, c))
        lm.model.eval()
        ensure_features(cache, c, lm.model, data.train, data.test, settings, plan, dist, c == req.checkpoint)
        now = load_checkpoint(cache, c, weights[c], req.n_train, req.n_test, settings, plan, dist, lru,
                              c == req.checkpoint)
        if plan.history:
            history.append(now)
        rows[c] = {i: token_gradients(lm.model, data.train[i], lm.tok.pad_token_id, lm.device)[0]
                   for i in req.train_ids}
    return now, history, rows
