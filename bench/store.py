"""The store at scale: synthetic runs of 1M, 10M and 100M score rows, ingested and queried in place.

    nice -n 10 .venv/bin/python -m bench.store [--sizes 1M,10M,100M] [--n 50] [--dir DIR] [--keep]

Each size is one method x one checkpoint x 1000 test prompts x (1k, 10k, 100k) training samples, written with
the engine's own table builders (``samples_table``, ``scores_table``, ``RunWriter``) in training shards of
``--shard`` samples, as the pipeline writes them (one shard in memory at a time). Every size is measured in two
layouts: ``shards`` (the shard files as written: the layout of run folders written before the merge) and
``merged`` (the same folder committed through ``RunWriter.commit``, which merges each method's shards into one
file sorted by test prompt). Per layout it prints the files, their size, the merge time, the ingest time (checks
+ the top-k table), and p50/p95 latency in ms of: one prompt's top-k (k = 200, from the topk table), one
prompt's full row (in place), one training sample's appearances in the top-k lists (k = 200), and the
leaderboard of the run (k = 10, computed from the topk table, with bootstrap intervals).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {"1M": 1_000, "10M": 10_000, "100M": 100_000}  # rows -> training samples (x 1000 test prompts)
N_TEST = 1000
LABELS = 10


def synthetic_run(runs_dir: Path, name: str, n_test: int, n_train: int, *, methods=("gradsim",),
                  checkpoints=(1,), shard: int = 2048, seed: int = 0, merge: bool = True,
                  k_default: int = 10) -> Path:
    """A complete run folder of ``len(methods) x len(checkpoints) x n_test x n_train`` score rows, written as the
    pipeline writes one (per training shard, through ``RunWriter``). Labels cycle over ``LABELS`` classes; a
    score is standard normal noise plus 1 when the training sample shares the test prompt's label, so rankings
    look like a method that mostly works. No metrics tables (the leaderboard computes them from the rankings)."""
    from engine.data.tasks.base import Sample, TaskData
    from engine.evaluation.tables import loss_table, samples_table, scores_table
    from engine.runfolder.runformat import scores_file
    from engine.runfolder.writer import open_run

    rng = np.random.default_rng(seed)
    tr_label = np.arange(n_train) % LABELS
    te_label = rng.integers(0, LABELS, n_test)
    task = TaskData("synthetic",
                    [Sample(f"train prompt {i} about topic {lab}", f"response {i}", f"label{lab}")
                     for i, lab in enumerate(tr_label)],
                    [Sample(f"test prompt {j} about topic {lab}", f"answer {j}", f"label{lab}")
                     for j, lab in enumerate(te_label)])
    with open_run(runs_dir, name) as w:
        w.write_table("samples.parquet", samples_table(task))
        w.write_table("train_loss.parquet", loss_table([]))
        for m in methods:
            for c in checkpoints:
                for s, a in enumerate(range(0, n_train, shard)):
                    b = min(a + shard, n_train)
                    S = rng.standard_normal((n_test, b - a), dtype=np.float32)
                    S += te_label[:, None] == tr_label[None, a:b]
                    w.write_table(scores_file(m, c, s), scores_table(m, c, S, a))
        return w.commit({"run": name, "kind": "pipeline", "model": "synthetic", "task": "synthetic",
                         "methods": list(methods), "checkpoints": list(checkpoints), "n_train": n_train,
                         "n_test": n_test, "labels": [f"label{i}" for i in range(LABELS)], "k_default": k_default},
                        merge_scores=merge)


def merged_copy(folder: Path, name: str) -> tuple[Path, float]:
    """Commit a copy of the shard-layout run ``folder`` as ``name`` through ``RunWriter.commit`` (which merges
    the shards); returns the new folder and the seconds the commit took."""
    from engine.runfolder.writer import RunWriter

    manifest = json.loads((folder / "manifest.json").read_text())
    tmp = folder.parent / f".{name}.tmp-{os.getpid()}"
    shutil.copytree(folder, tmp)
    (tmp / "manifest.json").unlink()
    w = RunWriter(tmp, folder.parent / name)
    w.files = dict(manifest.pop("files"))
    for key in ("format", "status", "created", "versions"):
        manifest.pop(key)
    t = time.perf_counter()
    out = w.commit({**manifest, "run": name})
    return out, time.perf_counter() - t


def _latency(fn, n: int) -> tuple[float, float]:
    fn(0)  # warm: Parquet footers cached, plans compiled
    ts = []
    for i in range(1, n + 1):
        t = time.perf_counter()
        fn(i)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3, float(np.percentile(ts, 95)) * 1e3


def measure(db: Path, folder: Path, n: int) -> dict:
    import store

    with store.Store(db) as s:
        t = time.perf_counter()
        assert s.ingest_run(folder)
        ingest = time.perf_counter() - t
    run = folder.name
    with store.Store(db, read_only=True) as s:
        info = store.run_info(s.con, run)
        m, c, n_test, n_train = info["methods"][0], info["checkpoints"][0], info["n_test"], info["n_train"]
        prompt = lambda i: (i * 7919) % n_test  # noqa: E731 - a different prompt each call
        out = {
            "top-k": _latency(lambda i: store.top_k(s.con, run, m, c, prompt(i), 200), n),
            "full row": _latency(lambda i: store.score_row(s.con, run, m, c, prompt(i)), n),
            "train in top-k": _latency(
                lambda i: store.test_prompts_ranking_train(s.con, run, m, c, (i * 104729) % n_train, 200), n),
            "leaderboard": _latency(lambda i: store.leaderboard(s.con, run=run), max(5, n // 10)),
        }
    files = list((folder / "scores").glob("*.parquet"))
    return {"ingest": ingest, "files": len(files), "mb": sum(f.stat().st_size for f in files) / 1e6, **out}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1M,10M,100M", help=f"comma-separated, of {', '.join(SIZES)}")
    ap.add_argument("--n", type=int, default=50, help="timed calls per query")
    ap.add_argument("--shard", type=int, default=2048, help="training samples per score shard (scoring.shard_size)")
    ap.add_argument("--dir", help="where to write the runs and stores (default: a temp folder, removed after)")
    ap.add_argument("--keep", action="store_true", help="keep the runs and stores")
    args = ap.parse_args()
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench-store-"))
    base.mkdir(parents=True, exist_ok=True)
    queries = ("top-k", "full row", "train in top-k", "leaderboard")
    print(f"1 method x 1 checkpoint x {N_TEST} test prompts; shards of {args.shard}; latency p50 / p95 in ms "
          f"over {args.n} calls (leaderboard {max(5, args.n // 10)})")
    head = f"{'rows':>5} {'layout':>7} {'files':>5} {'MB':>6} {'write s':>7} {'merge s':>7} {'ingest s':>8}"
    print(head + "".join(f" {q:>16}" for q in queries), flush=True)
    try:
        for size in args.sizes.split(","):
            n_train = SIZES[size]
            runs = base / f"runs-{size}"
            t = time.perf_counter()
            shards = synthetic_run(runs, f"synthetic-{size}-shards", N_TEST, n_train, shard=args.shard, merge=False)
            write = time.perf_counter() - t
            merged, merge = merged_copy(shards, f"synthetic-{size}")
            for layout, folder, merge_s in (("shards", shards, None), ("merged", merged, merge)):
                r = measure(base / f"store-{size}-{layout}.duckdb", folder, args.n)
                cells = "".join(f" {r[q][0]:>7.1f} / {r[q][1]:>6.1f}" for q in queries)
                print(f"{size:>5} {layout:>7} {r['files']:>5} {r['mb']:>6.0f} {write:>7.1f} "
                      f"{'-' if merge_s is None else f'{merge_s:.1f}':>7} {r['ingest']:>8.1f}{cells}", flush=True)
            if not args.keep:
                shutil.rmtree(runs)
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
