"""The query index of an existing run (``python -m engine index --run RUN``): from its spec and the adapter states
kept in its folder, through the feature cache (shards still there are reused, missing ones computed), then the
index beside the run (:mod:`engine.scoring.query_index`) and its summary in the run's manifest.

A run made with ``scoring.query_index: true`` has its index already (:mod:`engine.pipeline.run` writes it while
the features are at hand); this is for the others. The folder appears whole or not at all (built under a
temporary name, then renamed), and the manifest is rewritten atomically.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from engine.errors import InputError
from engine.features.distributed import Dist
from engine.features.stage import ensure_features, load_checkpoint, method_features, shard_count
from engine.features.types import Features
from engine.model.finetune import set_lora_state
from engine.model.states import checkpoint_state, load_model
from engine.pipeline.stages import (
    encode_data,
    feature_plan,
    load_data,
    open_cache,
    pass_settings,
    reload_spec,
    run_methods,
    say,
    tensor_lru,
)
from engine.runfolder.runformat import INDEX_DIR, MANIFEST, read_manifest
from engine.scoring.methods import get_method
from engine.scoring.query_index import answerable, index_body, index_checkpoints, write_index


class _States:
    """The TracIn weights of a run's checkpoints, as ``index_body`` reads them from AdapterStates."""

    def __init__(self, weights: list[float]):
        self.weights = weights


def build_index(folder: Path, *, force: bool = False, progress: bool = True) -> dict:
    """Build the query index of the run at ``folder``; returns ``index.json``'s content.

    An existing index is kept unless ``force``. The features come through the run's feature cache (its key: the
    spec and the data), so a run that kept its cache costs no gradient pass; the cache is deleted afterwards when
    the spec says ``scoring.feature_cache: delete`` (the index keeps its own links to the files).
    """
    t0 = time.perf_counter()
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        raise InputError(f"{folder}: not a complete run folder")
    if manifest.get("kind") != "pipeline":
        raise InputError(f"run {folder.name!r} holds imported scores: there are no features to index")
    if (folder / INDEX_DIR).exists() and not force:
        raise InputError(f"run {folder.name!r} has a query index already (rebuild it with --force)")
    spec = reload_spec(folder, manifest)
    log = say(progress)
    task = load_data(spec)
    methods = run_methods(spec)
    plan = feature_plan(spec, methods)
    lm = load_model(spec)
    data = encode_data(task, lm.tok, spec.train)
    info = manifest["checkpoint_info"]
    last = manifest["checkpoints"][-1]
    weights = [c["lr_weight"] for c in info]
    cache = open_cache(spec, task, lm, folder.parent)
    settings, lru = pass_settings(spec, lm, progress), tensor_lru(spec)
    checkpoints = index_checkpoints(plan, last)
    sides = {}
    for c in checkpoints:
        log(f"features at checkpoint {c} (through the feature cache {cache.folder})")
        set_lora_state(lm.model, checkpoint_state(folder, c))
        lm.model.eval()
        ensure_features(cache, c, lm.model, data.train, data.test, settings, plan, Dist(), c == last)
        now = load_checkpoint(cache, c, weights[c - 1], len(task.train), len(task.test), settings, plan, Dist(),
                              lru, c == last)
        sides[c] = now.test
    memo = _warm_statistics(now, [m for m in methods if m.name in answerable([x.name for x in methods], "prompt")[0]])
    tmp = folder / f".{INDEX_DIR}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        body = write_index(tmp, cache, checkpoints, shard_count(len(task.train), spec.scoring.shard_size), sides,
                           plan, memo, index_body(spec, [m.name for m in methods], len(task.train), len(task.test),
                                                  _States(weights)))
        shutil.rmtree(folder / INDEX_DIR, ignore_errors=True)
        os.replace(tmp, folder / INDEX_DIR)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _note_in_manifest(folder, manifest, body)
    if spec.scoring.feature_cache == "delete":
        cache.remove()
    log(f"index of {folder.name}: {body['size_bytes'] / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s")
    return body


def _warm_statistics(now, methods) -> dict:
    """The training-side statistics the methods compute for a query (one pass each, with the first test prompt
    as the query), kept in the last checkpoint's ``TrainData.memo`` for the index to save."""
    for m in methods:
        train_x, test_x = method_features(m.proj_key, now, [])
        if m.name == "tracin" or test_x.n == 0:
            continue  # no training-side statistic (and its queries read every checkpoint's gradients)
        first = Features(grads=[g[:1] for g in test_x.grads] if test_x.grads else None,
                         reps=None if test_x.reps is None else test_x.reps[:1], block_names=test_x.block_names,
                         proj=None if test_x.proj is None else test_x.proj.rows(0, 1),
                         rept=None if test_x.rept is None else test_x.rept[:1],
                         texts=None if test_x.texts is None else test_x.texts[:1], size=1)
        method = get_method(m.name)
        if method.queries is not None:
            method.queries(train_x, first, m.params)
    return now.train.memo


def _note_in_manifest(folder: Path, manifest: dict, body: dict) -> None:
    """The index's summary in the run's manifest (size, checkpoints, methods), written atomically."""
    manifest = {**manifest, "query_index": {k: body[k] for k in ("size_bytes", "checkpoints", "methods")}}
    part = folder / (MANIFEST + ".part")
    part.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(part, folder / MANIFEST)
