"""The memory probe: each stage's own peak resident memory, outer stages including their inner ones."""

import numpy as np
import pytest

from engine.pipeline.memory import MemoryProbe

MB = 1 << 20


def _rss_now_mb() -> float:
    """The resident size right now (VmRSS), not the high-water mark."""
    line = next(x for x in open("/proc/self/status").read().splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def _touch(mb: int) -> np.ndarray:
    a = np.ones(mb * MB, dtype=np.uint8)  # np.ones writes every page: resident
    return a


def test_a_stage_sees_its_own_allocation_and_a_later_stage_does_not():
    probe = MemoryProbe()
    if not probe.resettable:
        pytest.skip("this system does not let a process reset its high-water mark")
    with probe.stage("big"):
        base = _rss_now_mb()
        a = _touch(200)
        del a
    with probe.stage("small"):
        _touch(10)
    peaks = probe.peaks()
    assert peaks["rss"]["big"] >= base + 190
    assert peaks["rss"]["small"] < peaks["rss"]["big"] - 150  # the mark was reset: the freed 200 MB are not counted
    assert peaks["peak_rss"] >= peaks["rss"]["big"] and peaks["resettable"]


def test_an_outer_stage_keeps_the_peak_of_its_inner_stages_and_repeats_keep_the_largest():
    probe = MemoryProbe()
    if not probe.resettable:
        pytest.skip("this system does not let a process reset its high-water mark")
    with probe.stage("outer"):
        with probe.stage("inner"):
            base = _rss_now_mb()  # after the stage's trim and reset (the mark itself may sit higher)
            a = _touch(150)
            del a
        _touch(5)  # after the inner stage's reset and its end: the outer stage must still count the 150 MB
    with probe.stage("inner"):  # entered again, smaller: the larger peak stays
        _touch(5)
    peaks = probe.peaks()["rss"]
    assert peaks["inner"] >= base + 140 and peaks["outer"] >= peaks["inner"]
    assert set(peaks) == {"outer", "inner"}


def test_a_run_records_the_peak_of_every_stage(tiny_run):
    import json

    manifest = json.loads((tiny_run / "manifest.json").read_text())
    mem = manifest["peak_memory_mb"]
    assert {"load", "finetune", "features", "metrics", "checks"} <= set(mem["rss"])
    assert any(k.startswith("score_") for k in mem["rss"])
    assert all(v > 0 for v in mem["rss"].values())
    assert mem["peak_rss"] >= max(mem["rss"].values())
