"""The stages a run strings together, each with typed inputs and outputs (used by :mod:`engine.pipeline.run`, the
token command :mod:`engine.pipeline.tokens` and :mod:`engine.pipeline.import_scores`)::

    load_data(spec) -> TaskData                      built-in generator or the user's dataset, checked
    encode_data(task, tok, spec.train) -> EncodedData token ids and loss masks
    run_methods(spec) -> [ScoringMethod]             the spec's methods with their parameter objects
    feature_plan(spec, methods) -> FeaturePlan       what the methods and analyses read
    open_cache(spec, task, lm, runs_dir)             the run's feature cache
    pass_settings(spec, lm, progress), tensor_lru(spec)  how the feature passes run, what stays in memory
    cached_adapter_states(...) -> AdapterStates      fine-tuned (or the user's) states, through the cache
    reload_spec(folder, manifest) -> RunSpec         a finished run's spec, its model loadable from its folder
    releases_early(spec) -> bool                     a method's kept statistics freed once no later method keeps them
"""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from pathlib import Path

from engine.data.encoding import EncodedData, encode
from engine.data.tasks import build_task, load_dataset
from engine.data.tasks.base import TaskData, check_task
from engine.features.cache import FeatureCache, TensorLRU, feature_key
from engine.features.distributed import Dist
from engine.features.plan import FeaturePlan, plan_for
from engine.features.stage import PassSettings
from engine.model.adapters import adapter_digest
from engine.model.footprint import activation_dtype_bytes, batch_for_budget
from engine.model.states import AdapterStates, LoadedModel, adapter_states
from engine.paths import features_cache_dir
from engine.runfolder.runformat import CHECKPOINTS_DIR
from engine.scoring.methods import get_method
from engine.scoring.methods.base import ScoringMethod
from engine.spec.load import spec_from_dict
from engine.spec.run_spec import RunSpec, TaskSpec, TrainSpec

log = logging.getLogger(__name__)


def load_task(task: TaskSpec) -> TaskData:
    """Built-in generator or an imported dataset, as the spec says."""
    if task.name == "file":
        return load_dataset(task.path)
    return build_task(task.name, seed=task.seed, n_train_per_label=task.n_train_per_label,
                      n_test_per_label=task.n_test_per_label)


def load_data(spec: RunSpec) -> TaskData:
    """The spec's task data, checked (:func:`engine.data.tasks.base.check_task`)."""
    task = load_task(spec.task)
    check_task(task)
    return task


def encode_data(task: TaskData, tok, train: TrainSpec) -> EncodedData:
    """Every sample encoded with the spec's template, length and loss settings (``tok``: the model's tokenizer)."""
    def enc(s):
        return encode(s, tok, train.template, train.max_length, train.loss_on, train.preprocessing,
                      train.pad_attention)

    return EncodedData([enc(s) for s in task.train], [enc(s) for s in task.test],
                       [s.label for s in task.train], [s.label for s in task.test])


def run_methods(spec: RunSpec) -> list[ScoringMethod]:
    """The spec's methods with their parameter objects (checked, so a bad value fails before any work)."""
    for name in spec.scoring.methods:
        get_method(name)  # the implementation exists
    return [ScoringMethod(name, spec.scoring.method_params(name)) for name in spec.scoring.methods]


def feature_plan(spec: RunSpec, methods: list[ScoringMethod]) -> FeaturePlan:
    return plan_for({m.name: m.params for m in methods}, spec.analysis.stages, spec.scoring.self_influence)


def say(progress: bool):
    """Stage messages: to stderr when showing progress, else to the log."""
    if progress:
        return lambda msg: print(msg, file=sys.stderr, flush=True)
    return log.info


def grad_batch_size(spec: RunSpec, lm: LoadedModel) -> int:
    """``scoring.grad_batch_size``, or (None) the most samples of ``train.max_length`` tokens whose activations fit
    the budget of engine.model.footprint for this model."""
    if spec.scoring.grad_batch_size is not None:
        return spec.scoring.grad_batch_size
    return batch_for_budget(lm.model.config, spec.train.max_length, dtype_bytes=activation_dtype_bytes(lm.model))


def pass_settings(spec: RunSpec, lm: LoadedModel, progress: bool) -> PassSettings:
    """How the feature passes run for this spec and model: device, padding, batch and shard sizes."""
    return PassSettings(lm.device, lm.tok.pad_token_id, grad_batch_size(spec, lm), spec.scoring.shard_size,
                        progress)


def tensor_lru(spec: RunSpec) -> TensorLRU:
    """The cached tensors kept in memory, up to ``scoring.feature_memory_mb``."""
    return TensorLRU(spec.scoring.feature_memory_mb << 20)


def open_cache(spec: RunSpec, task: TaskData, lm: LoadedModel, runs_dir: Path) -> FeatureCache:
    key, basis = feature_key(spec, task, adapter_digest(lm.user) if lm.user is not None else None)
    return FeatureCache.open(features_cache_dir(runs_dir), key, basis)


def cached_adapter_states(spec: RunSpec, lm: LoadedModel, data: EncodedData, cache: FeatureCache, dist: Dist,
                          progress: bool) -> AdapterStates:
    """The adapter states: from the cache when a previous try of this run got that far, else fine-tuned (or
    loaded) by rank 0 and cached, while the other ranks wait and then read them."""
    states = cache.load_states() if dist.main else None
    if dist.main and states is None:
        states = adapter_states(spec, lm, data.train, progress)
        cache.save_states(states)
    dist.barrier()
    return states if states is not None else cache.load_states()


def reload_spec(folder: Path, manifest: dict) -> RunSpec:
    """The spec of the finished run at ``folder`` (``manifest``: its manifest), with a user's adapter read from the
    run folder's own copy of its states (``checkpoints/epoch-<c>``), so the run stays usable when the user's folder
    moves; for such runs the adapter's digest, hence the feature-cache key, is that copy's."""
    spec = spec_from_dict(manifest["spec"])
    if spec.model.adapter:
        last = Path(folder) / CHECKPOINTS_DIR / f"epoch-{max(manifest['checkpoints'])}"
        spec = replace(spec, model=replace(spec.model, adapter=str(last), checkpoints=()))
    return spec


def releases_early(spec: RunSpec) -> bool:
    """Whether the training-side statistics a method keeps are freed as soon as no method still to come keeps
    them (``release_statistics(train, unless_kept_by=...)``): when no later stage reads them, i.e. no
    self-influence (it re-reads every method's; on by default, so a default run keeps them) and no query index
    (it saves them). The memory plan
    (engine.pipeline.plan) follows the same rule; engine.pipeline.run.score_checkpoint applies it."""
    return not spec.scoring.self_influence and not spec.scoring.query_index
