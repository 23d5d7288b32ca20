"""How the engine scales with the number of training samples: features time per 1k samples, scoring time per
method, and peak memory (RSS), at several n_train, each run in a fresh process.

    .venv/bin/python -m bench.scale                                   # tiny model, n = 1k, 10k, 100k, 100 tests
    .venv/bin/python -m bench.scale --model smollm2-135m --n 250 1000 --n-test 20

Each size is one ``python -m engine run`` of the grammars task (one epoch, every method unless --methods, the
last checkpoint scored; TracIn also takes the gradients of the earlier checkpoints) with the feature cache on
disk and ``scoring.feature_memory_mb`` MB of cached tensors kept in memory. Peak RSS is the run's own probe's
peak over its stages (the child's ``ru_maxrss`` when larger); times are the manifest's per-stage timings. The goal: peak RSS at the largest n within 1.3x of
the size before it, and time linear in n_train (the per-1k columns flat). A second table gives every stage's own
peak RSS (the run's memory probe, ``peak_memory_mb`` in its manifest): where the memory goes, beside what
``python -m engine plan`` predicted for the same spec before the run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def run_one(model: str, n: int, n_test: int, methods: list[str] | None, memory_mb: int, shard: int,
            grad_batch: int | None, work: Path) -> dict:
    labels = 10  # grammars: 10 rules
    spec = {"name": f"scale-{model}-{n}", "model": {"name": model},
            "task": {"name": "grammars", "seed": 0, "n_train_per_label": n // labels,
                     "n_test_per_label": max(1, n_test // labels)},
            "lora": {"r": 4, "alpha": 32, "dropout": 0.0},
            "train": {"epochs": 1, "batch_size": 32, "lr": 1e-3, "max_length": 48, "loss_on": "sequence"},
            "scoring": {"checkpoints": "last", "shard_size": shard, "grad_batch_size": grad_batch,
                        "feature_memory_mb": memory_mb, **({"methods": methods} if methods else {}),
                        # self-influence of a preconditioned method costs as much as n test prompts: not here
                        "self_influence": False},
            # scoring only: the analyses (the stability check is on by default) re-score and are timed elsewhere
            "analysis": {"stages": []}}
    path = work / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    cmd = [sys.executable, "-m", "engine", "run", str(path), "--store", str(work / "s.duckdb"), "--quiet",
           "--no-ingest"]
    planned = subprocess.run([sys.executable, "-m", "engine", "plan", str(path), "--json"], cwd=REPO,
                             capture_output=True, text=True)
    plan = json.loads(planned.stdout) if planned.returncode == 0 else None  # engine plan: the prediction
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"run at n={n} failed:\n{proc.stderr.read()[-3000:]}")
    manifest = json.loads((work / "runs" / spec["name"] / "manifest.json").read_text())
    # the run resets its high-water mark per stage (engine.pipeline.memory), so the exit's ru_maxrss is the last
    # stage's: the run's peak is the larger of it and the manifest's peak over every stage
    peak = max(usage.ru_maxrss / 1024, manifest["peak_memory_mb"]["peak_rss"])
    return {"n": n, "wall_s": wall, "rss_mb": peak, "timings": manifest["timings"],
            "stages": manifest["peak_memory_mb"]["rss"],
            "planned": {k: v["host_mb"] for k, v in plan["stages"].items()} | {"peak": plan["peak_mb"]}
            if plan else {}}


def table(rows: list[dict]) -> str:
    methods = sorted({k[6:-2] for r in rows for k in r["timings"] if k.startswith("score_")})
    head = ["n_train", "peak RSS MB", "RSS vs previous", "fine-tune s", "features s / 1k", *[f"{m} s / 1k" for m in methods],
            "metrics s", "total s"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    prev = None
    for r in rows:
        t, k = r["timings"], r["n"] / 1000
        cells = [f"{r['n']:,}", f"{r['rss_mb']:.0f}", "" if prev is None else f"{r['rss_mb'] / prev:.2f}x",
                 f"{t['finetune_s']:.1f}", f"{t['features_s'] / k:.2f}",
                 *[f"{t.get(f'score_{m}_s', float('nan')) / k:.3f}" for m in methods],
                 f"{t['metrics_s']:.1f}", f"{t['total_s']:.0f}"]
        out.append("| " + " | ".join(cells) + " |")
        prev = r["rss_mb"]
    return "\n".join(out)


def stage_table(rows: list[dict]) -> str:
    """Peak RSS (MB) of every stage at every n (the run's memory probe, engine.pipeline.memory), beside what
    ``engine plan`` predicted for it before the run (and the ratio measured / predicted)."""
    stages = list(dict.fromkeys(s for r in rows for s in r["stages"]))
    out = ["| stage | " + " | ".join(f"n = {r['n']:,}: measured / planned" for r in rows) + " |",
           "|---|" + "---|" * len(rows)]

    def cell(r, s):
        got, want = r["stages"].get(s, float("nan")), r["planned"].get(s)
        return f"{got:.0f}" + (f" / {want:.0f} ({got / want:.2f})" if want else "")

    for s in stages:
        out.append(f"| {s} | " + " | ".join(cell(r, s) for r in rows) + " |")
    out.append("| **peak** | " + " | ".join(
        f"{r['rss_mb']:.0f}" + (f" / {r['planned']['peak']:.0f} ({r['rss_mb'] / r['planned']['peak']:.2f})"
                                 if r["planned"] else "") for r in rows) + " |")
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--n", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--methods", help="comma-separated (default: every default method)")
    ap.add_argument("--memory-mb", type=int, default=64, help="scoring.feature_memory_mb")
    ap.add_argument("--shard", type=int, default=2048, help="scoring.shard_size")
    ap.add_argument("--grad-batch", default="auto", help="scoring.grad_batch_size (default auto: from the model's "
                    "activation budget, engine.model.footprint; fine-tuning's micro-batches follow the same budget)")
    ap.add_argument("--work", help="folder for runs and the feature cache (default: a temp folder)")
    args = ap.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        rows = []
        for n in args.n:
            grad_batch = None if args.grad_batch == "auto" else int(args.grad_batch)
            rows.append(run_one(args.model, n, args.n_test, methods, args.memory_mb, args.shard, grad_batch,
                                Path(tmp)))
            print(f"n={n}: {rows[-1]['rss_mb']:.0f} MB, {rows[-1]['wall_s']:.0f} s", file=sys.stderr, flush=True)
    print(f"model {args.model}, {args.n_test} test prompts, shard {args.shard}, feature memory {args.memory_mb} MB, "
          f"gradient batch {args.grad_batch}, {os.cpu_count()} CPUs")
    print(table(rows))
    print("\npeak RSS per stage, MB (each stage's own peak: the mark is reset as it starts), measured / predicted by "
          "`engine plan` (ratio)")
    print(stage_table(rows))


if __name__ == "__main__":
    main()
