"""Attribution against ground truth: every default method and exact metagradients (``metagrad``) on the same run,
each method's linear datamodeling score (LDS) with its 95 % interval on the prompts that have metagrad, the
decomposition of the gap, and what metagrad costs beside one fine-tune.

    .venv/bin/python -m bench.metagrad [--model smollm2-135m] [--tasks grammars harmful_s] [--subsets 50]
                                       [--prompts 10] [--runs DIR]

Per task: the demo spec of the ``quick`` preset on ``--model`` (grammars: 60 training / 30 test samples; harmful_s:
the paper's mix S, 40 / 40), every default method, the retrain stage only, with ``--subsets`` LDS subsets keeping
half of the training set, one reshuffle for the noise floor, and ``metagrad`` on ``--prompts`` test prompts
(``retrain_labels: 0`` means every label, so each label's removal and its second-seed repeat are retrained too and
not reported: 20 of grammars' 72 retrainings). The retrain bank beside ``--runs`` keeps the retrainings, so a
second run of this script retrains nothing.

Printed per task: a table (method, what it assumes, LDS on the metagrad prompts with its interval, LDS on every
prompt), the decomposition in words, and the cost: the recorded fine-tune, the reverse sweep per prompt and one
fine-tune of the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from engine.catalog.analyses import DECOMPOSITION_PARTS, METAGRAD, decomposition_summary
from engine.pipeline.run import run_pipeline
from engine.spec.presets import demo_spec
from engine.spec.run_spec import validate


def bench_spec(model: str, task: str, subsets: int, prompts: int):
    spec = demo_spec(model, task, name=f"bench-metagrad-{task}-{model}", stages=("retrain",))
    analysis = dataclasses.replace(spec.analysis, lds_subsets=subsets, metagrad_prompts=prompts, noise_seeds=1,
                                   retrain_single=0, retrain_labels=0, retrain_seeds=0, cf_prompts=0)
    scoring = dataclasses.replace(spec.scoring, query_index=False)  # every default method (the preset's)
    return validate(dataclasses.replace(spec, analysis=analysis, scoring=scoring))


def table(folder: Path) -> tuple[list[dict], dict]:
    dec = pq.read_table(folder / "retrain_decomposition.parquet").to_pylist()
    lds = {r["method"]: r for r in pq.read_table(folder / "retrain_lds.parquet").to_pylist()}
    for r in dec:
        r["lds_all"] = lds[r["method"]]["lds"] if r["method"] != METAGRAD else None
        r["n_all"] = lds[r["method"]]["n_test"]
    order = {m: i for i, m in enumerate(DECOMPOSITION_PARTS)}
    dec.sort(key=lambda r: (order.get(r["method"], len(order)), -(r["lds"] if r["lds"] is not None else -9)))
    return dec, json.loads((folder / "manifest.json").read_text())["timings"]


def show(task: str, rows: list[dict], t: dict) -> None:
    def f(x):
        return "  -  " if x is None else f"{x:.3f}"

    print(f"\n## {task}: LDS on the {rows[0]['n_prompts']} prompts with {METAGRAD}, "
          f"{rows[0]['n_subsets']} subsets keeping half the training set")
    print("| method | what it assumes | LDS (metagrad prompts) | 95 % interval | LDS (all prompts) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['part'] or '-'} | {f(r['lds'])} | [{f(r['lds_lo'])}, {f(r['lds_hi'])}] "
              f"| {f(r['lds_all'])} |")
    print()
    print(" ".join(decomposition_summary(rows)))
    per_prompt = t["metagrad_reverse_s"] / max(1.0, t["metagrad_prompts"])
    print(f"\ncost: one fine-tune {t['finetune_s']:.1f} s; metagrad: recorded fine-tune "
          f"{t['metagrad_record_s']:.1f} s + reverse sweep {t['metagrad_reverse_s']:.1f} s for "
          f"{int(t['metagrad_prompts'])} prompts ({per_prompt:.1f} s per prompt, "
          f"{per_prompt / t['finetune_s']:.1f} fine-tunes), recorded states {t['metagrad_state_mb']:.1f} MB; "
          f"replay reproduced the run's adapter bit for bit: {bool(t['metagrad_reproduced'])}; "
          f"{int(t.get('retrain_new', 0))} new retrainings in {t.get('retrain_finetune_s', 0):.0f} s")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tasks", nargs="+", default=["grammars", "harmful_s"])
    ap.add_argument("--subsets", type=int, default=50)
    ap.add_argument("--prompts", type=int, default=10)
    ap.add_argument("--runs", type=Path, default=None, help="runs folder (default: a temporary one)")
    args = ap.parse_args(argv)
    runs = args.runs or Path(tempfile.mkdtemp(prefix="bench-metagrad-"))
    for task in args.tasks:
        folder = run_pipeline(bench_spec(args.model, task, args.subsets, args.prompts), runs, progress=False)
        show(task, *table(folder))


if __name__ == "__main__":
    main()
