"""Several processes, GPUs and machines through torchrun: who does which shard, and how statistics combine.

``torchrun --nproc_per_node N -m engine run SPEC.yaml`` starts N copies of the run; each finds its rank in the
environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) and joins
one process group: gloo on CPU, nccl on CUDA, the same code path. Training shard i belongs to rank
``i % world_size``; each rank computes its shards' features (in the shared feature cache), scores them, and
writes its own score files; statistics over all training samples are summed with ``all_reduce``; rank 0
fine-tunes (the others wait and read the adapter states from the cache), computes the metrics and analyses,
writes the manifest and commits the run folder. Several machines need the runs folder and the feature cache on
a shared filesystem. When any rank fails, torchrun stops the others, and rank 0's temp folder is removed: no
partial run becomes visible.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from engine.features.types import Comm


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: ``rank`` of ``world_size`` (1 = no torchrun)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device | None = None  # the rank's own device (cuda:LOCAL_RANK under nccl)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def shards(self, n_shards: int) -> list[int]:
        """The training shards of this rank."""
        return [i for i in range(n_shards) if i % self.world_size == self.rank]

    def test_part(self, n_test: int) -> tuple[int, int]:
        """The contiguous range of test samples whose features this rank computes."""
        per = -(-n_test // self.world_size)
        return min(self.rank * per, n_test), min((self.rank + 1) * per, n_test)

    def broadcast_int(self, value: int) -> int:
        """Rank 0's ``value`` on every rank (no pickle: a one-element tensor)."""
        if self.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.long, device=self._comm_device())
        torch.distributed.broadcast(t, src=0)
        return int(t.item())

    def all_ok(self, ok: bool) -> bool:
        """Whether every rank reports ``ok`` (so all ranks agree to go on or to stop)."""
        if self.world_size == 1:
            return ok
        t = torch.tensor([0 if ok else 1], dtype=torch.long, device=self._comm_device())
        torch.distributed.all_reduce(t)
        return int(t.item()) == 0

    @property
    def comm(self) -> Comm:
        if self.world_size == 1:
            return Comm()
        return Comm(reduce=self._reduce, gather=self._gather, world_size=self.world_size)

    def _comm_device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if _backend() == "nccl" else torch.device("cpu")

    def _reduce(self, t: torch.Tensor) -> torch.Tensor:
        x = t.to(self._comm_device()).contiguous()
        torch.distributed.all_reduce(x)
        return x.to(t.device)

    def _gather(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's rows (different row counts allowed), in rank order."""
        dev = self._comm_device()
        rows = torch.tensor([t.shape[0]], dtype=torch.long, device=dev)
        counts = [torch.zeros_like(rows) for _ in range(self.world_size)]
        torch.distributed.all_gather(counts, rows)
        most = int(max(int(c) for c in counts))
        padded = torch.zeros((most, *t.shape[1:]), dtype=t.dtype, device=dev)
        padded[: t.shape[0]] = t.to(dev)
        parts = [torch.zeros_like(padded) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, padded)
        return torch.cat([p[: int(c)] for p, c in zip(parts, counts)]).to(t.device)


def _backend() -> str:
    return torch.distributed.get_backend() if torch.distributed.is_initialized() else "gloo"


def from_environment(device: str = "auto") -> Dist:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1 (gloo on CPU, nccl on CUDA); else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank = int(os.environ["RANK"])
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank, world, torch.device("cuda", torch.cuda.current_device()) if use_cuda else None)


def shutdown() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
