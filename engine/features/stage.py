"""The features stage: at one checkpoint, compute exactly what the feature plan (:mod:`engine.features.plan`) asks for,
shard by shard into the feature cache (:mod:`engine.features.cache`), and read it back for scoring.

Training samples are processed shard by shard (``scoring.shard_size``): one gradient pass per shard gives the
per-sample gradients, the prompt representations, the losses and, when planned, the K-FAC factor sums; each
planned projection is applied to the shard right away, and the shard's full gradients are dropped unless the
plan keeps them. Each shard is written to the cache as soon as it is done (:func:`ensure_features`), so memory
is bounded by one shard and a killed run resumes from its finished shards. Test samples go through the same pass
(one part per process). RepT signatures take a pass of their own.
The sample texts (for lexical baselines) need no computation: the pipeline hands them over with
:func:`load_checkpoint` (``engine.data.tasks.difficulty.sample_text`` of each sample).

:func:`load_checkpoint` gives the scoring stage the cached training shards as a
:class:`~engine.features.types.TrainData` and the test side in memory; :func:`method_features` hands each
method what it reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from engine.features.cache import (
    FeatureCache,
    ShardWriter,
    TensorLRU,
    contents_of,
    kfac_totals,
    load_features,
    proj_name,
    read_header,
    side_header,
    write_side,
)
from engine.features.distributed import Dist
from engine.features.grads import KroneckerFactors, lora_blocks, merge_features, sample_features
from engine.features.plan import FeaturePlan, ProjKey
from engine.features.projection import ProjectedGrads, Projector, merge_projected
from engine.features.rept import rept_features
from engine.features.types import Comm, Features, TrainData


@dataclass
class SideFeatures:
    """Features of one side (train or test) at one checkpoint.

    grads: per LoRA block [n, d_l] when kept, else None; reps: [n, h]; loss: [n] per-sample loss;
    block_names: the LoRA blocks; kfac: factor sums (training side, when planned); projections: key ->
    projected gradients; rept: [n, 2h] when planned.
    """

    grads: list[torch.Tensor] | None
    reps: torch.Tensor
    loss: torch.Tensor
    block_names: tuple[str, ...]
    kfac: KroneckerFactors | None = None
    projections: dict[ProjKey, ProjectedGrads] = field(default_factory=dict)
    rept: torch.Tensor | None = None

    @property
    def n(self) -> int:
        return int(self.loss.shape[0])


@dataclass(frozen=True)
class PassSettings:
    """How to run the gradient passes: device, batch size, training samples per shard, progress bars."""

    device: torch.device
    pad_id: int
    batch_size: int = 16
    shard_size: int = 512
    progress: bool = True


def side_features(model, samples: list, run: PassSettings, plan: FeaturePlan, *, train: bool, keep_grads: bool,
                  desc: str) -> SideFeatures:
    """One side's features; the training side in shards of ``run.shard_size`` (test samples in one piece).

    ``keep_grads``: keep the full gradients (else only their projections survive each shard).
    """
    shard = run.shard_size if train else max(1, len(samples))
    kfac = plan.kfac and train
    parts, projected = [], {k: [] for k in plan.projections}
    projectors: dict[ProjKey, Projector] = {}
    for i in range(0, len(samples), shard):
        f = sample_features(model, samples[i:i + shard], run.pad_id, run.device, run.batch_size,
                            f"{desc} [{i}:{min(i + shard, len(samples))}]" if len(samples) > shard else desc,
                            run.progress,
                            kfac=kfac)
        for key in plan.projections:
            if key not in projectors:
                projectors[key] = Projector([g.shape[1] for g in f.grads], *key)
            projected[key].append(projectors[key].project(f.grads))
        # zero-width stand-ins free the shard's full gradients but keep merge_features' block structure
        parts.append(f if keep_grads else dataclasses.replace(f, grads=[torch.empty(g.shape[0], 0) for g in f.grads]))
    merged = merge_features(parts)
    rept = None
    if plan.rept:
        rept = rept_features(model, samples, run.pad_id, run.device, run.batch_size, desc=f"{desc} RepT",
                             progress=run.progress)
    return SideFeatures(grads=merged.grads if keep_grads else None, reps=merged.reps, loss=merged.loss,
                        block_names=merged.block_names, kfac=merged.kfac,
                        projections={k: merge_projected(v) for k, v in projected.items()}, rept=rept)


# ---------------------------------------------------------------------------------------------- the stage


@dataclass
class CheckpointData:
    """One checkpoint's features for scoring: the training side as TrainData (this process's shards, read from the
    feature cache), the test side in memory, and the checkpoint's TracIn weight. texts: (training texts, test
    texts) of every sample when the plan reads text (lexical baselines), else None."""

    checkpoint: int
    weight: float
    train: TrainData
    test: SideFeatures
    texts: tuple[tuple[str, ...], tuple[str, ...]] | None = None


def shard_count(n: int, shard_size: int) -> int:
    """How many training shards ``n`` samples make: shard i holds rows ``i * shard_size`` up to the next one."""
    return -(-n // shard_size)


def shard_bounds(n: int, shard_size: int) -> list[tuple[int, int]]:
    """The shards' global row ranges ``(start, stop)``, :func:`shard_count` of them."""
    return [(a, min(a + shard_size, n)) for a in range(0, n, shard_size)]


def test_ranges(n_test: int, dist) -> list[tuple[int, int]]:
    """Every process's part of the test samples (each computes its own; all read all)."""
    return [Dist(r, dist.world_size).test_part(n_test) for r in range(dist.world_size)]


def stream_train_shard(path, model, samples: list, run: PassSettings, plan: FeaturePlan, keep_grads: bool,
                       start: int, rank: int, desc: str) -> None:
    """One training shard's features written straight into its cache file (:class:`ShardWriter`): each batch's
    gradients go to disk as they are computed, and are projected there, so a shard never holds its full
    gradients in memory. The file is the one :func:`write_side` writes for :func:`side_features`' result."""
    n = len(samples)
    blocks = lora_blocks(model)
    widths = [m.out_features * m.in_features for _, m in blocks]
    kfac = plan.kfac
    # without full gradients to read back, a shard is projected batch by batch: its projectors keep every matrix
    # (SmolLM2 at k = 128: 141 MB), not regenerate most of them for every batch
    memo = 64 << 20 if keep_grads else 1 << 40
    projectors = {k: Projector(widths, *k, memo_bytes=memo) for k in plan.projections}
    projected = {k: [torch.empty(n, w) for w in pr.out_widths()] for k, pr in projectors.items()}
    rept = rept_features(model, samples, run.pad_id, run.device, run.batch_size, desc=f"{desc} RepT",
                         progress=run.progress) if plan.rept else None
    hidden = getattr(model.config, "get_text_config", lambda: model.config)().hidden_size
    f32, f64 = torch.float32, torch.float64
    tensors = {"reps": (f32, (n, hidden)), "loss": (f32, (n,))}
    if keep_grads:
        tensors |= {f"grads.{l}": (f32, (n, w)) for l, w in enumerate(widths)}
    if kfac:
        tensors |= {f"kfac.act.{l}": (f64, (m.in_features,) * 2) for l, (_, m) in enumerate(blocks)}
        tensors |= {f"kfac.grad.{l}": (f64, (m.out_features,) * 2) for l, (_, m) in enumerate(blocks)}
    for k, parts in projected.items():
        tensors |= {f"{proj_name(k)}.{l}": (f32, tuple(t.shape)) for l, t in enumerate(parts)}
    if rept is not None:
        tensors["rept"] = (f32, tuple(rept.shape))
    contents = contents_of(plan, True, keep_grads)
    proj_widths = {proj_name(k): list(widths) for k in projectors}
    names = tuple(name for name, _ in blocks)

    def header(tokens: int) -> dict:
        return side_header(n, start, rank, names, widths if keep_grads else None, proj_widths, contents, tokens)

    writer = ShardWriter(path, tensors, header(10 ** 15))  # room for any token count

    def sink(rows: torch.Tensor, grads: list[torch.Tensor]) -> None:
        for l, g in enumerate(grads):
            if keep_grads:
                writer.write_rows(f"grads.{l}", rows, g)
            else:  # nothing to read back: project the batch (each projector keeps its whole shard's matrices)
                for k, pr in projectors.items():
                    projected[k][l][rows] = pr.project_block(l, g)

    try:
        f = sample_features(model, samples, run.pad_id, run.device, run.batch_size, desc, run.progress, kfac=kfac,
                            rows_sink=sink)
        if keep_grads:  # project block by block from the file: each matrix made once per shard, one block in memory
            for l in range(len(blocks)) if projectors else ():
                G = writer.read(f"grads.{l}")
                for k, pr in projectors.items():
                    projected[k][l] = pr.project_block(l, G)
                del G
        writer.write("reps", f.reps)
        writer.write("loss", f.loss)
        for l in range(len(blocks)) if kfac else ():
            writer.write(f"kfac.act.{l}", f.kfac.act[l])
            writer.write(f"kfac.grad.{l}", f.kfac.grad[l])
        for k, parts in projected.items():
            for l, t in enumerate(parts):
                writer.write(f"{proj_name(k)}.{l}", t)
        if rept is not None:
            writer.write("rept", rept)
        writer.close(header(f.kfac.tokens if kfac else 0))
    except BaseException:
        writer.abort()
        raise


def ensure_features(cache: FeatureCache, checkpoint: int, model, train_enc: list, test_enc: list,
                    run: PassSettings, plan: FeaturePlan, dist, scored: bool,
                    after_shard: Callable[[], None] | None = None) -> tuple[int, int]:
    """Compute this process's missing shards (and test part) at ``checkpoint`` into the cache; return
    ``(computed, reused)`` shard counts. A shard file already there with the contents the plan needs is reused
    (a resumed run, or new methods on the same features). All processes meet at the end.

    ``after_shard``: called once a shard's features are written and dropped (the pipeline hands the freed heap
    back to the system there: a shard's gradients and its passes' activations, interleaved on the heap, would
    otherwise stay resident into the next shard and the stages after)."""
    if not scored:  # only TracIn's history reads this checkpoint: full gradients and nothing else
        plan = FeaturePlan(grads=True)
    keep = plan.keep_train_grads or not scored
    need_train, need_test = contents_of(plan, True, keep), contents_of(plan, False, True)
    bounds = shard_bounds(len(train_enc), run.shard_size)
    computed = reused = 0
    for i in dist.shards(len(bounds)):
        path = cache.train_file(checkpoint, i)
        if cache.has(path, need_train):
            reused += 1
            continue
        a, b = bounds[i]
        stream_train_shard(path, model, train_enc[a:b], run, plan, keep, a, dist.rank,
                           desc=f"train grads @{checkpoint} [{a}:{b}]")
        computed += 1
        if after_shard is not None:
            after_shard()
    a, b = dist.test_part(len(test_enc))
    path = cache.test_file(checkpoint, a, b)
    if b > a and not cache.has(path, need_test):
        write_side(path, side_features(model, test_enc[a:b], run, plan, train=False, keep_grads=True,
                                       desc=f"test grads @{checkpoint}"), need_test, a, dist.rank)
        if after_shard is not None:
            after_shard()
    dist.barrier()
    return computed, reused


def load_checkpoint(cache: FeatureCache, checkpoint: int, weight: float, n_train: int, n_test: int,
                    run: PassSettings, plan: FeaturePlan, dist, lru: TensorLRU, scored: bool,
                    texts: tuple[tuple[str, ...], tuple[str, ...]] | None = None) -> CheckpointData:
    """The cached features of ``checkpoint`` as :class:`CheckpointData` (training shards of this process);
    ``texts``: (training texts, test texts), handed through when the plan reads text."""
    if not scored:
        plan = FeaturePlan(grads=True)
    bounds = shard_bounds(n_train, run.shard_size)
    train = _train_data(cache, checkpoint, n_train, bounds, dist.shards(len(bounds)), plan, lru, dist.comm)
    parts = []
    for a, b in test_ranges(n_test, dist):
        if b > a:
            path = cache.test_file(checkpoint, a, b)
            h = read_header(path)
            f = load_features(path, lru, None, h, None)
            projections = {k: load_features(path, lru, (), h, k).proj for k in plan.projections}
            loss = lru.get(path, ["loss"])["loss"]
            parts.append(SideFeatures(f.grads, f.reps, loss, f.block_names, None, projections, f.rept))
    return CheckpointData(checkpoint, weight, train, _concat(parts), texts if plan.text else None)


def _train_data(cache: FeatureCache, checkpoint: int, n_train: int, bounds: list[tuple[int, int]], shards: list[int],
                plan: FeaturePlan, lru: TensorLRU, comm) -> TrainData:
    """TrainData over the cached training ``shards`` (indices into ``bounds``) at ``checkpoint``; the K-FAC factor
    sums are summed with ``comm`` (over the processes, each holding its own shards)."""
    paths = [cache.train_file(checkpoint, i) for i in shards]
    headers = [read_header(p) for p in paths]
    top = read_header(cache.train_file(checkpoint, 0))
    key0 = plan.projections[0] if plan.projections else None

    def loader(j: int, blocks, proj_key=None):
        return load_features(paths[j], lru, blocks, headers[j], proj_key if proj_key is not None else key0)

    return TrainData(n_train, [bounds[i] for i in shards], loader,
                     tuple(top["widths"]) if top["contents"]["grads"] else (), tuple(top["block_names"]),
                     kfac_totals(paths, headers, comm.reduce, cache.train_file(checkpoint, 0)), torch.device("cpu"),
                     comm=comm)


def all_train_shards(cache: FeatureCache, checkpoint: int, n_train: int, shard_size: int, plan: FeaturePlan,
                     lru: TensorLRU) -> TrainData:
    """Every training shard at ``checkpoint``, whichever process computed it (the cache is shared): what one
    process reads for a study that needs the whole training set in one place (the iHVP study under torchrun)."""

    bounds = shard_bounds(n_train, shard_size)
    return _train_data(cache, checkpoint, n_train, bounds, list(range(len(bounds))), plan, lru, Comm())


def _concat(parts: list[SideFeatures]) -> SideFeatures:
    if len(parts) == 1:
        return parts[0]
    cat = lambda xs: torch.cat(xs) if xs[0] is not None else None  # noqa: E731
    grads = None if parts[0].grads is None else [torch.cat([p.grads[l] for p in parts])
                                                  for l in range(len(parts[0].grads))]
    projections = {k: merge_projected([p.projections[k] for p in parts]) for k in parts[0].projections}
    return SideFeatures(grads, cat([p.reps for p in parts]), cat([p.loss for p in parts]), parts[0].block_names,
                        None, projections, cat([p.rept for p in parts]))


def method_features(proj_key: ProjKey | None, now: CheckpointData, history: list[CheckpointData]):
    """``(train TrainData, test Features)`` for a method at checkpoint ``now``: the projection it reads (when
    ``proj_key``), and the history of checkpoints up to ``now`` (TracIn)."""

    train_texts, test_texts = now.texts if now.texts is not None else (None, None)
    train = dataclasses.replace(now.train, history=[(c.weight, c.train) for c in history], texts=train_texts)
    s = now.test
    test = Features(grads=s.grads, reps=s.reps, block_names=s.block_names, rept=s.rept,
                    proj=s.projections.get(proj_key) if proj_key is not None else None,
                    history=tuple((c.weight, c.test.grads) for c in history), texts=test_texts, size=s.n)
    return train, test


def materialize(data: TrainData) -> list[torch.Tensor]:
    """Every training gradient of this process in memory, per block [n, d_l] (for the iHVP study, which inverts
    explicit matrices on parameter subsets and reads all gradients by design)."""
    return [torch.cat(list(data.block(l))) for l in range(data.n_blocks)]
