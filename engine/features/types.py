"""The training side of a scoring call, shard by shard: in memory, from the on-disk feature cache, or spread over
the ranks of a torchrun job.

Methods never hold all training gradients at once. They read :class:`TrainData` in two ways:

- ``block(l)``: block l (one LoRA matrix) of every local training shard, in order, for the statistics pass(es)
  that preconditioning needs (norms, Gram matrices, DataInf's weighted sums, EK-FAC's eigenvalues);
- ``shard(i)``: every feature of local shard i, for the scoring pass ``S[:, shard] = sum_l Q_l T_l^T``.

Statistics are sums over training samples, so each process sums its own shards and :attr:`comm` adds them up
across processes (``reduce``) or stacks rows (``gather``); one process needs no communication. ``n`` is always
the number of training samples of the whole run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import torch

from engine.features.grads import KroneckerFactors
from engine.features.projection import ProjectedGrads


@dataclass(frozen=True)
class Features:
    """Per-sample inputs to attribution methods.

    grads: list of ``[n, d_l]`` float32 tensors, one per LoRA block, same order for train and test.
    reps: ``[n, h]`` float32 tensor, or None.
    block_names: names of the LoRA blocks (e.g. ``model.layers.0.self_attn.q_proj.lora_A``).
    history: gradients at the checkpoints up to and including the scored one, ``((weight_c, grads_c), ...)`` in
        training order, with ``weight_c`` the learning-rate weight of checkpoint c; used by TracIn. Empty when
        not computed.
    kfac: the K-FAC factor sums of every block over these samples (``engine.features.grads.KroneckerFactors``), read
        from the training side by ``kfac``/``ekfac``; None when not computed.
    proj: seeded random projections of ``grads`` (``engine.features.projection.ProjectedGrads``), read by the ``*_proj``
        methods; None when not computed (those methods then project ``grads`` themselves).
    rept: ``[n, 2h]`` float32 RepT parts (``engine.features.rept``): hidden state at the last prompt token, then
        d loss / d that hidden state; None when not computed.
    texts: the samples' texts (``engine.data.tasks.difficulty.sample_text``: prompt, newline, response), read by
        lexical baselines; None when not planned.
    size: the number of samples, set by the pipeline whatever else is computed (a method that reads no feature,
        such as the random baseline, still needs it); None = count from the features.
    """

    grads: list[torch.Tensor] | None = None
    reps: torch.Tensor | None = None
    block_names: tuple[str, ...] = ()
    history: tuple[tuple[float, list[torch.Tensor]], ...] = ()
    kfac: KroneckerFactors | None = None
    proj: ProjectedGrads | None = None
    rept: torch.Tensor | None = None
    texts: tuple[str, ...] | None = None
    size: int | None = None

    @property
    def n(self) -> int:
        if self.size is not None:
            return int(self.size)
        if self.texts is not None:
            return len(self.texts)
        if self.grads:
            return int(self.grads[0].shape[0])
        if self.reps is not None:
            return int(self.reps.shape[0])
        if self.proj is not None:
            return self.proj.n
        if self.rept is not None:
            return int(self.rept.shape[0])
        if self.history:
            return int(self.history[0][1][0].shape[0])
        return 0


@dataclass(frozen=True)
class Comm:
    """How statistics of one process's shards combine with the others': ``reduce`` sums a tensor over processes
    (in place allowed), ``gather`` concatenates row blocks ``[n_local, d]`` of every process along dim 0 in rank
    order. The default is one process."""

    reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t
    gather: Callable[[torch.Tensor], torch.Tensor] = lambda t: t
    world_size: int = 1


@dataclass
class TrainData:
    """The training samples' features for one scoring call.

    n: training samples in the whole run; bounds: this process's shards as global row ranges ``(start, stop)``;
    loader(i, blocks, proj_key=None) -> Features of shard i (``blocks``: gradient blocks wanted, None = all, () =
    none; ``proj_key``: which projection to put in ``Features.proj``, when there are several); widths: gradient
    (or projected) block widths, ``()`` when there are no gradients; block_names; kfac: K-FAC factor sums over
    every training sample (or None); device: where loaded tensors live (the default compute device);
    history: for TracIn, ``[(weight_c, TrainData_c), ...]`` of the checkpoints up to the scored one;
    memo: per-object cache of derived statistics (e.g. Gram factors), shared by the methods of one call;
    texts: the texts of ALL n training samples (lexical baselines), or None.
    """

    n: int
    bounds: list[tuple[int, int]]
    loader: Callable[..., Features]
    widths: tuple[int, ...] = ()
    block_names: tuple[str, ...] = ()
    kfac: object = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    history: list = field(default_factory=list)
    comm: Comm = field(default_factory=Comm)
    memo: dict = field(default_factory=dict)
    views: dict = field(default_factory=dict)  # key -> TrainData (e.g. projections), made once
    texts: tuple[str, ...] | None = None

    @property
    def n_blocks(self) -> int:
        return len(self.widths)

    def shard(self, i: int, proj_key=None) -> Features:
        """Every feature of local shard ``i`` (rows ``bounds[i]``), with the same rows' gradients at the history
        checkpoints (TracIn) when there is a history; ``proj_key``: which projection goes in ``Features.proj``
        (None: the loader's default)."""
        f = self.loader(i, None) if proj_key is None else self.loader(i, None, proj_key)
        if self.history and not f.history:
            f = replace(f, history=tuple((w, td.loader(i, None).grads) for w, td in self.history))
        return f

    def shards(self) -> Iterator[tuple[int, int, Features]]:
        for i, (start, stop) in enumerate(self.bounds):
            yield start, stop, self.shard(i)

    def block(self, l: int) -> Iterator[torch.Tensor]:
        """Gradient block ``l`` of each local shard, ``[stop - start, d_l]``, in shard order."""
        for i in range(len(self.bounds)):
            yield self.loader(i, (l,)).grads[0]

    def view(self, key, make: Callable[[TrainData], TrainData]) -> TrainData:
        """A derived TrainData (e.g. the projected gradients), made once per key."""
        if key not in self.views:
            self.views[key] = make(self)
        return self.views[key]

    @staticmethod
    def of(f: Features, shard_size: int | None = None) -> TrainData:
        """In-memory features as TrainData, in shards of ``shard_size`` rows (None: one shard)."""
        n = f.n
        size = n if not shard_size else int(shard_size)
        bounds = [(a, min(a + size, n)) for a in range(0, n, max(size, 1))] or [(0, 0)]

        def loader(i: int, blocks: tuple[int, ...] | None, proj_key=None) -> Features:
            a, b = bounds[i]
            return slice_features(f, a, b, blocks)

        widths = tuple(int(g.shape[1]) for g in f.grads) if f.grads else ()
        device = _device_of(f)
        history = [(w, TrainData.of(Features(grads=gs, block_names=f.block_names), shard_size))
                   for w, gs in f.history]
        return TrainData(n, bounds, loader, widths, f.block_names, f.kfac, device, history, texts=f.texts)

    def with_loader(self, loader, widths, **changes) -> TrainData:
        """The same shards with another loader (a derived view); statistics memo not shared."""
        return replace(self, loader=loader, widths=widths, memo={}, views={}, **changes)


def slice_features(f: Features, start: int, stop: int, blocks: tuple[int, ...] | None = None) -> Features:
    """Rows ``start:stop`` of in-memory features (only gradient ``blocks`` when given)."""
    grads = None
    if f.grads:
        picked = f.grads if blocks is None else [f.grads[l] for l in blocks]
        grads = [g[start:stop] for g in picked]
    proj = f.proj.rows(start, stop) if f.proj is not None else None
    history = tuple((w, [g[start:stop] for g in gs]) for w, gs in f.history)
    return Features(grads=grads, reps=None if f.reps is None else f.reps[start:stop], block_names=f.block_names,
                    history=history, kfac=f.kfac, proj=proj, rept=None if f.rept is None else f.rept[start:stop],
                    texts=None if f.texts is None else f.texts[start:stop], size=len(range(start, min(stop, f.n))))


def _device_of(f: Features) -> torch.device:
    for t in (*(f.grads or []), f.reps, f.rept, *(f.proj.blocks if f.proj is not None else [])):
        if isinstance(t, torch.Tensor):
            return t.device
    for _, gs in f.history:
        if gs:
            return gs[0].device
    return torch.device("cpu")


def as_train_data(train: Features | TrainData, shard_size: int | None = None) -> TrainData:
    return train if isinstance(train, TrainData) else TrainData.of(train, shard_size)
