"""The memory probe: peak memory of every stage of a run, for the manifest (``peak_memory_mb``) and ``bench.scale``.

Linux keeps a process's resident-set high-water mark (``VmHWM`` in ``/proc/self/status``) and lets the process
reset it to the current resident size (writing ``5`` to ``/proc/self/clear_refs``). A stage's own peak is then
read by resetting the mark as the stage starts (after handing the heap's freed pages back to the system:
:func:`release_freed_memory`) and reading it as it ends. Stages nest (``scoring`` holds one
stage per method): before an inner stage resets the mark, every open outer stage takes the mark so far, so an
outer peak always includes its inner ones. Where the mark cannot be reset (not Linux, or a locked-down
``/proc``), every stage reads the process's peak since it started (``resettable`` is False, and the manifest
says so). On CUDA the same is done with torch's allocator peak (``torch.cuda.reset_peak_memory_stats``).

Peaks are in MB (2**20 bytes). RSS counts what the process touched: the model's weights, torch's and the
allocator's pools, memory-mapped feature files that were read; it is what decides whether a run fits a machine.
"""

from __future__ import annotations

import re
import resource
import sys
from contextlib import contextmanager
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
MB = 1 << 20


def status_mb(field: str) -> float | None:
    """A memory field of ``/proc/self/status`` in MB (``VmHWM``, ``VmRSS``, ...); None where it cannot be read."""
    try:
        found = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        found = None
    return int(found.group(1)) / 1024 if found else None


def rss_high_water_mb() -> float:
    """The process's resident-set high-water mark in MB (since it started or since the last reset)."""
    found = status_mb("VmHWM")
    if found is not None:
        return found
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / MB if sys.platform == "darwin" else peak / 1024


def reset_rss_high_water() -> bool:
    """Reset the high-water mark to the current resident size; False where the system does not allow it."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def release_freed_memory() -> None:
    """Hand the heap's freed pages back to the system (glibc ``malloc_trim``; nothing elsewhere).

    Tensors under glibc's mmap threshold (which grows to 32 MB as large blocks are freed) live on the heap, and
    freeing them does not shrink the process: after fine-tuning SmolLM2 its resident size stayed at ~4 GB through
    every later stage while the live tensors took well under 1 GB (measured with this probe). Trimming between
    stages costs milliseconds and gives that memory back, so a stage's peak is its own.
    """
    global _libc
    if _libc is None:
        try:
            import ctypes

            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


_libc = None


class MemoryProbe:
    """Peak memory per named stage: ``with probe.stage("features"): ...``; a stage entered again (once per
    checkpoint) keeps its largest peak. ``peaks()``: ``{"rss": {stage: MB}, "peak_rss": MB, "resettable": bool}``,
    plus ``"gpu"`` and ``"peak_gpu"`` on CUDA. One probe per process: a stage's reset moves the mark every probe
    reads."""

    def __init__(self, cuda: bool = False):
        self.cuda = cuda
        self.resettable = _CLEAR_REFS.exists()  # confirmed (or not) by the first reset
        self.rss: dict[str, float] = {}
        self.gpu: dict[str, float] = {}
        self._open: list[list] = []  # [name, rss peak so far, gpu peak so far] of every open stage, outermost first
        self._overall = [0.0, 0.0]

    def _read(self) -> tuple[float, float]:
        gpu = torch.cuda.max_memory_allocated() / MB if self.cuda else 0.0
        return rss_high_water_mb(), gpu

    def _take(self) -> None:
        """Every open stage (and the whole probe) takes the marks so far."""
        rss, gpu = self._read()
        for entry in self._open:
            entry[1], entry[2] = max(entry[1], rss), max(entry[2], gpu)
        self._overall = [max(self._overall[0], rss), max(self._overall[1], gpu)]

    def _reset(self) -> None:
        release_freed_memory()
        if self.resettable:
            self.resettable = reset_rss_high_water()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    @contextmanager
    def stage(self, name: str):
        self._take()
        self._reset()
        entry = [name, 0.0, 0.0]
        self._open.append(entry)
        try:
            yield
        finally:
            self._take()
            self._open.pop()
            self.rss[name] = round(max(self.rss.get(name, 0.0), entry[1]), 1)
            if self.cuda:
                self.gpu[name] = round(max(self.gpu.get(name, 0.0), entry[2]), 1)

    def peaks(self) -> dict:
        """For the manifest: the peak of every stage so far, and of the whole probe."""
        self._take()
        out = {"rss": dict(self.rss), "peak_rss": round(self._overall[0], 1), "resettable": self.resettable}
        if self.cuda:
            out |= {"gpu": dict(self.gpu), "peak_gpu": round(self._overall[1], 1)}
        return out
