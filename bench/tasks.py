"""How hard the built-in safety tasks are: every method's Acc@1 / Coverage@k on each task and its ``*_easy``
variant, beside the lexical-shortcut rate and the response lengths.

Run from the repository root (SmolLM2 converted once into $INFLUENCE_CACHE)::

    INFLUENCE_CACHE=/work/cache nice -n 10 .venv/bin/python -m bench.tasks --out /tmp/bench-tasks
    .venv/bin/python -m bench.tasks --difficulty-only    # sizes, shortcut rates, lengths of every task (seconds)

Each task runs through the CLI (``python -m engine run SPEC --no-ingest --analyses none``) with the ``quick``
preset and ``scoring.checkpoints: last`` into ``OUT/runs``; a task whose run folder is already complete there is
not run again, so an interrupted benchmark resumes. The backdoor tasks are scaled down by default
(``--backdoor-size``) to fit a small CPU. Prints a Markdown table: one row per method, one column per task,
``Acc@1 / Coverage@k`` at the last checkpoint, then the lexical-shortcut rate (with chance), the best possible
coverage and the median response length in words and in the model's tokens per label.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from engine.data.tasks.difficulty import length_stats, lexical_shortcut, sample_text

SAFETY = ("harmful_l", "harmful_m", "harmful_s", "backdoor", "multi_backdoor")


def spec_for(task: str, model: str, sizes: dict[str, tuple[int, int]]) -> dict:
    base = task.removesuffix("_easy")
    t = {"name": task, "seed": 0}
    if base in sizes:
        t["n_train_per_label"], t["n_test_per_label"] = sizes[base]
    return {"preset": "quick", "name": f"bench-{task}-{model}", "task": t, "model": {"name": model},
            "scoring": {"checkpoints": "last"}, "analysis": {"stages": []}}


def run_task(spec: dict, out: Path) -> Path:
    folder = out / "runs" / spec["name"]
    manifest = folder / "manifest.json"
    if manifest.exists() and json.loads(manifest.read_text()).get("status") == "complete":
        return folder
    spec_path = out / f"{spec['name']}.json"  # JSON is YAML
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "INFLUENCE_RUNS": str(out / "runs")}
    cmd = [sys.executable, "-m", "engine", "run", str(spec_path), "--no-ingest", "--analyses", "none",
           "--store", str(out / "bench.duckdb"), "--quiet"]
    print(f"running {spec['name']} ...", file=sys.stderr, flush=True)
    if subprocess.run(cmd, env=env).returncode != 0:
        sys.exit(f"error: the run of {spec['name']} failed (its message is above)")
    return folder


def token_lengths(folder: Path, model: str, samples: pd.DataFrame) -> dict[str, float]:
    """Median response length per label in the model's tokens (``{label: median}``)."""
    from engine.model.base import load_base

    _, tok = load_base(model)
    n = np.array([len(tok(r, add_special_tokens=False)["input_ids"]) for r in samples.response])
    return {lab: float(np.median(n[samples.label.to_numpy() == lab])) for lab in sorted(samples.label.unique())}


def summarize(task: str, folder: Path, model: str) -> dict:
    samples = pd.read_parquet(folder / "samples.parquet")
    train, test = samples[samples.split == "train"], samples[samples.split == "test"]
    sc = lexical_shortcut([sample_text(p, r) for p, r in zip(train.prompt, train.response)], train.label.tolist(),
                          [sample_text(p, r) for p, r in zip(test.prompt, test.response)], test.label.tolist())
    metrics = pd.read_parquet(folder / "metrics.parquet")
    metrics = metrics[metrics.checkpoint == metrics.checkpoint.max()]
    words = {s.label: s.median for s in length_stats(samples.response.tolist(), samples.label.tolist())}
    return {"task": task, "n_train": len(train), "n_test": len(test), "shortcut": sc.rate, "chance": sc.chance,
            "k": int(metrics.k.iloc[0]), "best_coverage": float(metrics.best_coverage.iloc[0]),
            "methods": {m: (float(a), float(c)) for m, a, c in zip(metrics.method, metrics.acc, metrics.coverage)},
            "words": words, "tokens": token_lengths(folder, model, samples)}


def markdown(rows: list[dict]) -> str:
    head = "| | " + " | ".join(f"`{r['task']}` ({r['n_train']}/{r['n_test']}, k={r['k']})" for r in rows) + " |"
    lines = [head, "|---" * (len(rows) + 1) + "|"]
    methods = list(rows[0]["methods"])
    for m in methods:
        cells = [f"{r['methods'][m][0]:.2f} / {r['methods'][m][1]:.2f}" if m in r["methods"] else "–" for r in rows]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines.append("| **lexical shortcut** (chance) | " + " | ".join(
        f"**{r['shortcut']:.2f}** ({r['chance']:.2f})" for r in rows) + " |")
    lines.append("| best possible coverage | " + " | ".join(f"{r['best_coverage']:.2f}" for r in rows) + " |")
    lines.append("| median response words per label | " + " | ".join(
        ", ".join(f"{lab} {v:g}" for lab, v in r["words"].items()) for r in rows) + " |")
    lines.append("| median response tokens per label | " + " | ".join(
        ", ".join(f"{lab} {v:g}" for lab, v in r["tokens"].items()) for r in rows) + " |")
    return "\n".join(lines)


def difficulty_table(seeds: int) -> str:
    """Every built-in task at the paper's sizes: sizes, the lexical-shortcut rate (seed 0, and the mean over
    ``seeds`` seeds) with chance, and response words per label (median [q25-q75], min-max); no model runs."""
    from engine.data.tasks import TASK_NAMES, build_task
    from engine.data.tasks.difficulty import task_shortcut

    lines = ["| task | train / test | lexical shortcut: seed 0 (mean of seeds 0-%d) | chance | response words per "
             "label: median [q25-q75], min-max |" % (seeds - 1), "|---|---|---|---|---|"]
    for name in TASK_NAMES:
        tasks = [build_task(name, seed=s) for s in range(seeds)]
        rates = [task_shortcut(t.train, t.test) for t in tasks]
        t = tasks[0]
        rows = t.train + t.test
        words = "; ".join(f"{x.label} {x.median:g} [{x.q25:g}-{x.q75:g}], {x.min}-{x.max}"
                          for x in length_stats([s.response for s in rows], [s.label for s in rows]))
        if len(t.labels) > 3:
            med = [x.median for x in length_stats([s.response for s in rows], [s.label for s in rows])]
            words = f"{len(t.labels)} labels, medians {min(med):g}-{max(med):g}"
        lines.append(f"| `{name}` | {len(t.train)} / {len(t.test)} | {rates[0].rate:.2f} "
                     f"({np.mean([r.rate for r in rates]):.2f}) | {rates[0].chance:.2f} | {words} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="folder for specs and run folders (reused)")
    ap.add_argument("--difficulty-only", action="store_true",
                    help="only the difficulty of every built-in task at the paper's sizes (no model runs)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds for the mean shortcut rate (--difficulty-only)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tasks", default=",".join(t for base in SAFETY for t in (base, base + "_easy")))
    ap.add_argument("--backdoor-size", default="20,5",
                    help="n_train_per_label,n_test_per_label of backdoor (multi_backdoor gets half); "
                         "'paper' for the paper's sizes")
    args = ap.parse_args(argv)
    if args.difficulty_only:
        print(difficulty_table(args.seeds))
        return
    if args.out is None:
        ap.error("--out is required (or --difficulty-only)")
    # explicit sizes: the quick preset's own task sizes would otherwise apply
    sizes = {"harmful_s": (20, 40), "harmful_m": (20, 40), "harmful_l": (20, 40),
             "backdoor": (350, 50), "multi_backdoor": (175, 25)}
    if args.backdoor_size != "paper":
        a, b = (int(x) for x in args.backdoor_size.split(","))
        sizes.update(backdoor=(a, b), multi_backdoor=(max(1, a // 2), max(1, b // 2)))
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        folder = run_task(spec_for(task, args.model, sizes), args.out)
        rows.append(summarize(task, folder, args.model))
        (args.out / "table.md").write_text(markdown(rows) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
