"""Out of core and scale-out, end to end on the tiny model: a killed run resumes from its finished shards (none is
computed again) and gives the same scores; a 2-process torchrun run (gloo) equals a 1-process run for every method;
a rank killed mid-run leaves no complete run; the feature cache is reused across a change of the process count.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from engine.runfolder.runformat import list_complete_runs, read_manifest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
KEY = ["method", "checkpoint", "test_id", "train_id"]
SPEC = {"task": {"name": "grammars", "seed": 0, "n_train_per_label": 4, "n_test_per_label": 1},
        "model": {"name": "tiny"}, "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"epochs": 2, "batch_size": 8, "lr": 0.01, "max_length": 48},
        "scoring": {"checkpoints": "all", "shard_size": 4, "grad_batch_size": 4}}


def _spec_file(tmp_path, name, **scoring) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "name": name, "scoring": {**SPEC["scoring"], **scoring}}))
    return path


def _cmd(spec: Path, data: Path, nproc: int = 1) -> list[str]:
    run = ["-m", "engine", "run", str(spec), "--store", str(data / "s.duckdb"), "--quiet", "--no-ingest"]
    if nproc == 1:
        return [sys.executable, *run]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
            str(29500 + os.getpid() % 1000), *run]


def _run(spec, data, nproc=1):
    done = subprocess.run(_cmd(spec, data, nproc), cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return data / "runs" / yaml.safe_load(spec.read_text())["name"]


def _scores(folder):
    return pq.read_table(folder / "scores").to_pandas().sort_values(KEY).reset_index(drop=True)


def _assert_same_scores(a, b):
    x, y = _scores(a), _scores(b)
    np.testing.assert_array_equal(x[KEY].to_numpy(), y[KEY].to_numpy())
    for method, g in x.groupby("method"):
        want = g.score.to_numpy()
        got = y.score[y.method == method].to_numpy()
        assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want)), method


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 1-process run of the spec (every method, both checkpoints)."""
    tmp = tmp_path_factory.mktemp("ref")
    return _run(_spec_file(tmp, "ref"), tmp / "data")


def _shard_files(data):
    return sorted((data / "features").glob("*/ckpt-*/train-*.safetensors"))


def test_a_killed_run_resumes_from_its_finished_shards(tmp_path, reference):
    spec, data = _spec_file(tmp_path, "resumed", feature_cache="keep"), tmp_path / "data"
    proc = subprocess.Popen(_cmd(spec, data), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while len(_shard_files(data)) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # no clean-up at all
    proc.wait()
    assert list_complete_runs(data / "runs") == []
    finished = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in _shard_files(data)}
    assert 3 <= len(finished) < 20  # 10 shards per checkpoint, 2 checkpoints: killed mid-way
    folder = _run(spec, data)
    for p, stamp in finished.items():  # not one finished shard was computed again
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stamp
    m = read_manifest(folder)
    assert m["feature_shards"] == {"computed": 20 - len(finished), "reused": len(finished)}
    _assert_same_scores(reference, folder)


def test_two_processes_equal_one_and_leave_a_cache_one_process_reuses(tmp_path, reference):
    data = tmp_path / "data"
    folder = _run(_spec_file(tmp_path, "two", feature_cache="keep"), data, nproc=2)
    m = read_manifest(folder)
    assert m["world_size"] == 2 and set(m["shard_ranks"].values()) == {0, 1}
    assert m["feature_shards"] == {"computed": 20, "reused": 0}
    _assert_same_scores(reference, folder)
    ref_metrics = pq.read_table(reference / "metrics.parquet").to_pandas().sort_values(["method", "checkpoint"])
    got = pq.read_table(folder / "metrics.parquet").to_pandas().sort_values(["method", "checkpoint"])
    np.testing.assert_allclose(got[["acc", "coverage"]].to_numpy(), ref_metrics[["acc", "coverage"]].to_numpy())
    # self-influence: rank 0 takes every cached shard (the training samples as queries differ per process, and a
    # preconditioned query sums over the processes for one shared set of queries: summing per-rank ones was wrong)
    key = ["method", "checkpoint", "train_id"]
    si_ref = pq.read_table(reference / "self_influence.parquet").to_pandas().sort_values(key).reset_index(drop=True)
    si = pq.read_table(folder / "self_influence.parquet").to_pandas().sort_values(key).reset_index(drop=True)
    assert len(si) == len(si_ref) > 0 and si[key].equals(si_ref[key])
    np.testing.assert_allclose(si.score.to_numpy(), si_ref.score.to_numpy(), rtol=1e-5)
    # resuming across a change of the process count: one process finds every shard the two wrote
    again = _run(_spec_file(tmp_path, "one-after-two"), data)  # another name, the same features
    assert read_manifest(again)["feature_shards"] == {"computed": 0, "reused": 20}
    _assert_same_scores(reference, again)
    assert not (data / "features").exists()  # feature_cache: delete (the default) after success


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def test_a_killed_rank_leaves_no_complete_run(tmp_path):
    spec, data = _spec_file(tmp_path, "killed"), tmp_path / "data"
    proc = subprocess.Popen(_cmd(spec, data, nproc=2), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while len(_shard_files(data)) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    workers = _children(proc.pid)
    assert len(workers) == 2
    os.kill(workers[-1], signal.SIGKILL)  # one rank dies; torchrun stops the other and fails
    assert proc.wait(timeout=300) != 0
    runs = data / "runs"
    assert list_complete_runs(runs) == [] and not (runs / "killed").exists()


ANALYSES = {"stages": ["ihvp", "retrain"], "retrain_single": 1, "retrain_labels": 0, "retrain_seeds": 1,
            "noise_seeds": 1, "lds_subsets": 3, "cf_prompts": 0, "generate_tokens": 2, "ihvp_iterations": [1, 10]}


def test_two_processes_share_the_retrainings_and_give_the_same_analyses(tmp_path):
    """Under torchrun every process runs its share of the retrainings into the retrain bank and rank 0 finds them
    all there; the iHVP study reads every training shard whichever rank computed it. Both give the tables of one
    process."""
    def spec(name):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**SPEC, "name": name, "analysis": ANALYSES,
                                        "scoring": {**SPEC["scoring"], "methods": ["gradsim", "datainf"]}}))
        return path

    one = _run(spec("one"), tmp_path / "one")
    two = _run(spec("two"), tmp_path / "two", nproc=2)
    for name, key in (("ihvp_error", ["level", "method", "lambda_c", "iterations"]), ("retrain_groups", ["group_id"])):
        a = pq.read_table(one / f"{name}.parquet").to_pandas().sort_values(key).reset_index(drop=True)
        b = pq.read_table(two / f"{name}.parquet").to_pandas().sort_values(key).reset_index(drop=True)
        assert len(a) == len(b) > 0
        numeric = [c for c in a.columns if a[c].dtype.kind == "f" and not c.startswith("time") and c != "train_s"]
        np.testing.assert_allclose(b[numeric].to_numpy(float), a[numeric].to_numpy(float), rtol=1e-5, atol=1e-9,
                                   err_msg=name)
    t1, t2 = read_manifest(one)["timings"], read_manifest(two)["timings"]
    jobs = int(t1["retrain_new"] + t1["retrain_reused"])
    assert jobs >= 3 and t1["retrain_new"] == jobs  # one process retrains everything itself ...
    assert t2["retrain_new"] == 0 and t2["retrain_reused"] == jobs  # ... two: rank 0 finds every one in the bank
    assert "retrain_spread_s" in t2
    banked = list((tmp_path / "two" / "retrain-bank").glob("*/*/meta.json"))
    assert len(banked) == jobs
