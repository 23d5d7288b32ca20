"""bench/gpu_check.py: its CPU dry run goes through every step of the GPU check end to end inside its time limit
and prints one table with a row per step (so a GPU session cannot lose its minutes to a trivial failure); the
batch search halves only on out-of-memory; a step that outlives the time limit is stopped and reported."""

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench import gpu_check
from bench.gpu_check import STEPS, Done, Row, State, largest_batch, run_step, table

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_dry_run_runs_every_step_and_prints_one_table():
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--dry-run"], cwd=REPO, capture_output=True,
                          text=True, timeout=240)
    took = time.perf_counter() - t
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("step"))
    assert re.match(r"step\s+seconds\s+peak memory\s+FLOP rate\s+note$", lines[header])
    rows = lines[header + 2: header + 2 + len(STEPS)]
    assert [r[:22].strip() for r in rows] == list(STEPS)
    for r in rows:
        assert "FAILED" not in r, r
        assert re.match(r".{22}\s*\d+\.\d\d\s+(\S+ MiB|-)\s+(\d+\.\d %|-)  \S", r), r
    by_step = {r[:22].strip(): r for r in rows}
    for step in ("finetune", "grads", "kfac factors", "datainf", "ekfac", "gradsim", "gradsim_proj"):
        assert re.search(r"\d+\.\d %", by_step[step]), by_step[step]  # a FLOP share where a count exists
    assert re.search(r"float32, best of \d+: \d+\.\d+ TFLOP/s", by_step["matmul"])  # the reference rate
    assert "MiB" in by_step["grads"] and "MiB" in by_step["torchrun"]
    assert "gloo: all_reduce ok" in by_step["torchrun"]
    assert "skipped: engine.query not available" in by_step["query"] or gpu_check.query_api() is not None
    assert lines[-1].startswith("total ") and "no step failed" in lines[-1]
    assert took < 240


def test_the_batch_search_halves_on_out_of_memory_only():
    tried = []

    def fits_up_to_3(b):
        tried.append(b)
        if b > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    assert largest_batch(fits_up_to_3, 16, torch.device("cuda")) == 2
    assert tried == [16, 8, 4, 2]
    with pytest.raises(torch.cuda.OutOfMemoryError):  # on CPU there is no allocator limit to search for
        largest_batch(fits_up_to_3, 16, torch.device("cpu"))
    with pytest.raises(ValueError, match="shape"):  # any other error is the step's failure, not a smaller batch
        largest_batch(lambda b: (_ for _ in ()).throw(ValueError("bad shape")), 16, torch.device("cuda"))

    def never_fits(b):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        largest_batch(never_fits, 4, torch.device("cuda"))


def _state():
    return State(gpu_check.DRY_SHAPE, torch.device("cpu"), torch.float32, rate=1e9)


def test_a_step_past_the_time_limit_is_stopped_and_reported():
    t = time.perf_counter()
    row = run_step("grads", lambda st: time.sleep(30), _state(), budget=10.0, remaining=0.3)
    assert time.perf_counter() - t < 5
    assert row.failed and "StepTimeout" in row.note and "time limit" in row.note


def test_a_step_row_reports_failures_skips_budget_and_flop_share():
    st = _state()
    ok = run_step("gradsim", lambda s: Done(flops=1e9, timed=0.5, note="fine"), st, budget=10.0, remaining=60)
    assert not ok.failed and ok.share == pytest.approx(2.0) and ok.note == "fine"
    slow = run_step("gradsim", lambda s: time.sleep(0.05) or Done(note="slow"), st, budget=0.01, remaining=60)
    assert "over budget" in slow.note and not slow.failed
    skipped = run_step("query", lambda s: gpu_check._need(None, "the pipeline's run"), st, 10.0, 60)
    assert not skipped.failed and skipped.note == "skipped: needs the pipeline's run"
    failed = run_step("ekfac", lambda s: {}["missing"], st, 10.0, 60)  # a bug is a failure, never a skip
    assert failed.failed and failed.note.startswith("FAILED: KeyError")
    text = table([ok, skipped, Row("torchrun", 1.0, 3 * 2**20, note="gloo")])
    assert "200.0 %" in text and "3 MiB" in text and text.splitlines()[0].startswith("step")
