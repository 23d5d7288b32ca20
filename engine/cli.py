"""Command line: ``python -m engine COMMAND ...`` (command names and flags are a contract other tools use).

Commands: run SPEC.yaml | demo [--model tiny|smollm2-135m] [--task grammars|harmful_s] |
attribute --model BASE --adapter DIR [--checkpoints DIR ...] --dataset PATH [--methods a,b] [--name RUN] |
import-dataset PATH --name NAME | import-scores --dataset PATH --scores CSV --method NAME --run NAME |
report --run NAME [--k K] [--json] | ingest | rebuild-store | worker [--once] |
tokens --run NAME --checkpoint C --train I[,J...] [--methods a,b] | index --run NAME [--force] |
query --run NAME --prompt TEXT [--response TEXT | --generate] [--candidate] [--methods a,b] [--k K] [--json] |
plan SPEC.yaml [--memory-gb G] [--device cuda --gpu-memory-gb G] [--json] |
serve-query [--host H] [--port P]. run, demo and attribute take
``--analyses LIST``; run and attribute also run under torchrun. Every command takes ``--store FILE`` (default ``$INFLUENCE_STORE`` or
``data/influence.duckdb``); run folders live in ``$INFLUENCE_RUNS`` or ``<store dir>/runs``.
Bad input prints ``error: ...`` (no traceback) and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

from engine.errors import EngineStateError, InputError


def _store_path(args) -> Path:
    from engine.paths import default_store_path

    return Path(args.store) if args.store else default_store_path()


def _runs_dir(args) -> Path:
    from engine.paths import default_runs_dir

    return default_runs_dir(_store_path(args))


def _open_for_writing(args):
    """The store, read-write; a file that is corrupt or from another schema version is first rebuilt from the
    run folders (the database is a cache of them), as the app does at start-up."""
    import store
    from store.db import StoreOpenError

    try:
        return store.Store(_store_path(args))
    except (store.SchemaVersionError, StoreOpenError) as e:
        print(f"note: {e}\nrebuilding it from {_runs_dir(args)}", file=sys.stderr)
        store.rebuild(_store_path(args), _runs_dir(args))
        return store.Store(_store_path(args))


def _ingest(args, folder: Path) -> None:
    """Ingest a finished run folder; if another process holds the store, leave it for that process."""
    import store

    try:
        with _open_for_writing(args) as s:
            store.ingest_run(s.con, folder)
    except store.StoreLockedError as e:
        print(f"note: {e}; the run folder {folder} is complete and will be ingested by the app "
              f"(or `python -m engine ingest`) later", file=sys.stderr)


def _print_report(args, run: str, k: int | None, as_json: bool) -> None:
    import store
    from engine.evaluation.metrics import LABEL_METRICS

    with store.Store(_store_path(args), read_only=True) as s:
        df = store.leaderboard(s.con, run=run, k=k)
        if df.empty:
            raise InputError(f"run {run!r} is not in the store {_store_path(args)}")
        labelled = store.run_labelled(s.con, run)
        stability, perturbations = _stability(s.con, run)
        retrained = "retrain" in store.analyses(s.con, run)
        lds = store.analysis_table(s.con, run, "retrain_lds") if retrained else None
        dec = store.analysis_table(s.con, run, "retrain_decomposition") if retrained else None
    # the check's figure at the run's last checkpoint, on every row; a run without the check has no such column
    # in the text report and ``"stability": null`` in the JSON rows
    df["stability"] = df.method.map(stability) if stability else None
    cols = [c for c in ("method", "checkpoint", "k", "acc", "coverage", "auprc", "chance_acc",
                        "chance_coverage", "best_coverage", "n_distinct_top1", "stability") if c in df.columns
            and (c != "stability" or as_json or stability)]
    if as_json:  # intervals as [lo, hi] (95 % bootstrap over test prompts; null when unknown or without labels)
        rows = json.loads(df[cols].to_json(orient="records", double_precision=15))
        for row, (_, r) in zip(rows, df.iterrows()):
            row["acc_ci"] = _pair(r.acc_lo, r.acc_hi)
            row["coverage_ci"] = _pair(r.coverage_lo, r.coverage_hi)
            row["labelled"] = labelled
            row["perturbations"] = perturbations.get(r.method, {})
        print(json.dumps(rows + _lds_fields(rows, lds, dec), indent=1))
        return
    if dec is not None and not dec.empty:  # the text report: the decomposition against metagrad, in words
        from engine.catalog.analyses import decomposition_summary

        print(" ".join(decomposition_summary(dec.to_dict("records"))))
    if not labelled:  # the label metrics read "needs labels", never NaN
        out = df[cols].astype(object)
        out.loc[:, [c for c in cols if c in LABEL_METRICS]] = "needs labels"
        print(f"run {run}: no labels, so no ground truth (Acc@1, Coverage@k, AUPRC need labels)")
        print(out.to_string(index=False))
    else:
        # intervals as [lo,hi]: 95 % bootstrap over the test prompts (engine.evaluation.metrics.bootstrap_ci)
        out = df[cols].copy()
        out.insert(out.columns.get_loc("acc") + 1, "acc_ci95", [_span(a, b) for a, b in zip(df.acc_lo, df.acc_hi)])
        out.insert(out.columns.get_loc("coverage") + 1, "coverage_ci95",
                   [_span(a, b) for a, b in zip(df.coverage_lo, df.coverage_hi)])
        print(out.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def _lds_fields(rows: list[dict], lds, dec) -> list[dict]:
    """Sets ``lds``, ``lds_ci`` ([lo, hi]) and ``lds_metagrad_prompts`` (the method's LDS on the prompts that have
    metagrad, from the decomposition) on every JSON row (null without the retraining analysis or the value), and
    returns the extra rows: one ``method = "metagrad"`` row per checkpoint of the others (label metrics null, its
    LDS over its own prompts, ``metagrad_prompts``: how many)."""
    by = {} if lds is None else {r.method: r for r in lds.itertuples()}
    on = {} if dec is None else {r.method: r for r in dec.itertuples()}
    for row in rows:
        r, d = by.get(row["method"]), on.get(row["method"])
        row["lds"] = None if r is None or r.lds != r.lds else float(r.lds)
        row["lds_ci"] = None if r is None else _pair(r.lds_lo, r.lds_hi)
        row["lds_metagrad_prompts"] = None if d is None or d.lds != d.lds else float(d.lds)
    from engine.catalog.analyses import METAGRAD

    if METAGRAD not in by:
        return []
    r, keys = by[METAGRAD], list(rows[0]) if rows else []
    n = int(dec.n_prompts.iloc[0]) if dec is not None and not dec.empty else int(r.n_test)
    out = []
    for ck in sorted({row.get("checkpoint") for row in rows} or {None})[-1:]:
        row = {key: None for key in keys}
        row.update(method=METAGRAD, checkpoint=ck, lds=None if r.lds != r.lds else float(r.lds),
                   lds_ci=_pair(r.lds_lo, r.lds_hi), lds_metagrad_prompts=None if r.lds != r.lds else float(r.lds),
                   metagrad_prompts=n, labelled=rows[0].get("labelled") if rows else None, perturbations={})
        out.append(row)
    return out


def _stability(con, run: str) -> tuple[dict[str, float], dict[str, dict]]:
    """The stability check of ``run``: method -> stability, and method -> {perturbation: {overlap, spearman,
    should_matter, source}}; warnings for the unstable methods go to stderr. Both empty without the check."""
    import store
    from engine.catalog.analyses import STABILITY_WARN, stability_warning
    from engine.evaluation.metrics import unstable_methods

    if "stability" not in store.analyses(con, run):
        return {}, {}
    rows = store.analysis_table(con, run, "stability").to_dict("records")
    summary = store.analysis_table(con, run, "stability_methods")
    per: dict[str, dict] = {}
    for r in rows:
        per.setdefault(r["method"], {})[r["perturbation"]] = {
            "overlap": float(r["overlap"]), "spearman": None if r["spearman"] != r["spearman"] else
            float(r["spearman"]), "should_matter": bool(r["should_matter"]), "source": r["source"]}
    for method, value, moving in unstable_methods(rows, STABILITY_WARN):
        print(f"warning: {stability_warning(method, value, moving)}", file=sys.stderr)
    return dict(zip(summary.method, summary.stability.astype(float))), per


def _pair(lo, hi) -> list[float] | None:
    import math

    return None if lo is None or hi is None or math.isnan(lo) or math.isnan(hi) else [float(lo), float(hi)]


def _span(lo, hi) -> str:
    pair = _pair(lo, hi)
    return "-" if pair is None else f"[{pair[0]:.3f},{pair[1]:.3f}]"


def _print_folder_report(folder: Path) -> None:
    """The leaderboard straight from a run folder's metrics.parquet (needs no database)."""
    import pyarrow.parquet as pq

    from engine.evaluation.metrics import LABEL_METRICS

    df = pq.read_table(folder / "metrics.parquet").to_pandas().sort_values(["method", "checkpoint"])
    if len(df) and df.acc.isna().all():  # a run without labels: the label metrics read "needs labels", not NaN
        print("no labels, so no ground truth (Acc@1, Coverage@k, AUPRC need labels)")
        df = df.astype(object)
        df.loc[:, [c for c in df.columns if c in LABEL_METRICS]] = "needs labels"
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def _with_analyses(spec, value: str | None):
    """Override ``spec.analysis.stages`` with ``--analyses`` ("all", "none" or a comma-separated list)."""
    from dataclasses import replace

    from engine.catalog.analyses import ANALYSES
    from engine.spec.run_spec import validate

    if value is None:
        return spec
    value = value.strip()
    stages = ANALYSES if value == "all" else () if value in ("none", "") else \
        tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [v for v in stages if v not in ANALYSES]
    if unknown:
        raise InputError(f"--analyses: unknown analysis {unknown[0]!r}; valid: all, none, {', '.join(ANALYSES)}")
    return validate(replace(spec, analysis=replace(spec.analysis, stages=stages)))


def _run_spec(args, spec):
    """Run ``spec``: in this process, or as one rank of a torchrun job (``WORLD_SIZE`` > 1), where rank 0
    commits and reports; returns the run folder (None on the other ranks)."""
    from engine.features import distributed
    from engine.pipeline.run import run_pipeline

    dist = distributed.from_environment(spec.device)
    try:
        extra = {"dist": dist} if dist.world_size > 1 else {}
        folder = run_pipeline(spec, _runs_dir(args), progress=not args.quiet and dist.main, **extra)
    finally:
        distributed.shutdown()
    if folder is None:
        return None
    print(f"run {spec.run_name} written to {folder}" + (f" ({dist.world_size} processes)"
                                                        if dist.world_size > 1 else ""))
    if not args.no_ingest:
        _ingest(args, folder)
    return folder


def cmd_run(args) -> None:
    from engine.spec.load import load_spec

    _run_spec(args, _with_analyses(load_spec(args.spec), args.analyses))


def cmd_plan(args) -> None:
    from engine.pipeline.plan import format_plan, plan_run
    from engine.spec.load import load_spec

    plan = plan_run(load_spec(args.spec), device=args.device, memory_gb=args.memory_gb,
                    gpu_memory_gb=args.gpu_memory_gb)
    print(json.dumps(plan.to_dict(), indent=2) if args.json else format_plan(plan))


def cmd_demo(args) -> None:
    from engine.pipeline.run import run_pipeline
    from engine.spec.presets import demo_spec

    spec = _with_analyses(demo_spec(args.model, args.task, args.device, args.name), args.analyses)
    folder = run_pipeline(spec, _runs_dir(args), progress=not args.quiet)
    print(f"run {spec.run_name} written to {folder}")
    if not args.no_ingest:
        _ingest(args, folder)
    _print_folder_report(folder)


def attribute_spec(args):
    """The spec ``attribute`` runs: the user's adapter on their dataset, scored by the chosen methods."""
    from engine.spec.load import spec_from_dict

    data: dict = {
        "model": {"name": args.model, "adapter": args.adapter, "checkpoints": list(args.checkpoints or []),
                  "trust_remote_code": args.trust_remote_code, "load_in": args.load_in},
        "task": {"name": "file", "path": args.dataset},
        "scoring": {"checkpoints": args.score_checkpoints},
        "train": {"loss_on": args.loss_on, "max_length": args.max_length},
        "device": args.device, "dtype": args.dtype,
    }
    if args.template:
        data["train"]["template"] = args.template
    if args.methods:
        data["scoring"]["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.name:
        data["name"] = args.name
    return spec_from_dict(data)


def cmd_attribute(args) -> None:
    folder = _run_spec(args, _with_analyses(attribute_spec(args), args.analyses))
    if folder is not None:
        _print_folder_report(folder)


def cmd_import_dataset(args) -> None:
    from engine.data.datasets import save_dataset
    from engine.data.tasks import load_dataset
    from engine.paths import default_datasets_dir

    task = load_dataset(args.path, name=args.name)
    out = save_dataset(task, default_datasets_dir(_store_path(args)), args.name)
    labels = f"{len(task.labels)} labels" if task.labelled else "no labels (the label metrics will need them)"
    print(f"dataset {args.name}: {len(task.train)} train, {len(task.test)} test, {labels} "
          f"→ {out}\nuse it in a spec as  task: {{name: file, path: {out}}}")


def cmd_import_scores(args) -> None:
    from engine.pipeline.import_scores import import_scores

    folder = import_scores(Path(args.dataset), Path(args.scores), args.method, args.run, _runs_dir(args), args.k)
    print(f"run {args.run} written to {folder}")
    _ingest(args, folder)


def cmd_report(args) -> None:
    _print_report(args, args.run, args.k, args.json)


def cmd_ingest(args) -> None:
    import store

    with _open_for_writing(args) as s:
        names = store.ingest_all(s.con, _runs_dir(args))
    print(f"ingested {len(names)} new or changed run(s): {', '.join(names) or '-'}")


def cmd_rebuild_store(args) -> None:
    import store

    store.rebuild(_store_path(args), _runs_dir(args))
    print(f"rebuilt {_store_path(args)} from {_runs_dir(args)}")


def _id_list(text: str, what: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{what} must be comma-separated integers, got {text!r}") from None


def cmd_tokens(args) -> None:
    from engine.paths import default_tokens_dir
    from engine.pipeline.tokens import attribute_tokens

    folder = _runs_dir(args) / args.run
    tokens_dir = Path(args.tokens_dir) if args.tokens_dir else default_tokens_dir(_store_path(args))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    paths = attribute_tokens(folder, args.checkpoint, _id_list(args.train, "--train"), tokens_dir, methods,
                             device=args.device, progress=not args.quiet)
    for p in paths:
        print(f"wrote {p}")


def cmd_worker(args) -> None:
    from engine.jobs.queue import job_command, worker_loop
    from engine.model.base import detect_device
    from engine.paths import default_jobs_dir

    store_path = _store_path(args)
    job_command("spec.json", store_path)  # a bad $WORKER_NPROC fails here, not at the first job
    jobs_dir = Path(args.jobs) if args.jobs else default_jobs_dir(store_path)
    worker_loop(jobs_dir, store_path, _runs_dir(args), once=args.once, poll_s=args.poll,
                log=lambda msg: print(msg, flush=True), device=detect_device())


def cmd_index(args) -> None:
    from engine.query.build import build_index

    body = build_index(_runs_dir(args) / args.run, force=args.force, progress=not args.quiet)
    print(f"index of {args.run}: {body['size_bytes'] / 1e6:.1f} MB, checkpoints {body['checkpoints']}, "
          f"methods {', '.join(body['prompt_methods'])}")


def cmd_query(args) -> None:
    from engine.query.api import answer, answer_rows

    if args.generate and args.response is not None:
        raise InputError("give --response or --generate, not both")
    if args.candidate and args.generate:
        raise InputError("--candidate scores the text given: --generate does not apply")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    a, where = answer(args.run, args.prompt, args.response, kind="candidate" if args.candidate else "prompt",
                      generate=args.generate, methods=methods, k=args.k or 10, runs_dir=_runs_dir(args),
                      use_server=not args.no_server)
    if args.json:
        print(json.dumps(answer_rows(a)))
        return
    _print_answer(a, where)


def _print_answer(a: dict, where: str) -> None:
    """The top k per method as text, with what the user should know (generated response, notes, refusals)."""
    if a["generated"]:
        print(f"the model answered: {a['response']}")
    for note in a["notes"]:
        print(f"note: {note}")
    what = "training samples" if a["kind"] == "prompt" else "test prompts"
    for m, top in a["top"].items():
        print(f"{m}: best {what} " + "  ".join(f"#{i} ({s:.4g})" for i, s in top))
    for m, why in a["cannot"].items():
        print(f"{m}: cannot answer: {why}")
    print(f"({a['seconds']['total_s']:.2f} s, computed by the {where} {'server' if where == 'server' else 'process'})")


def cmd_serve_query(args) -> None:
    from engine.query.client import find_server
    from engine.query.server import serve

    runs_dir = _runs_dir(args)
    running = find_server(runs_dir)
    if running is not None:
        raise EngineStateError(f"a query server already serves {runs_dir} (pid {running.pid}, {running.url})")
    preload = [r.strip() for r in args.preload.split(",") if r.strip()] if args.preload else []
    print(f"query server for {runs_dir} (Ctrl-C stops it)", flush=True)
    serve(runs_dir, host=args.host, port=args.port, advertise=args.advertise, max_sessions=args.max_runs,
          memory_mb=args.memory_mb, preload=preload)


def _spec_flag(parser: argparse.ArgumentParser, flag: str, path: str, *, spec_default: bool = True, **kw) -> None:
    """Add ``flag`` for the spec field at ``path``: its choices (and, with ``spec_default``, its default) are the
    field's own (``engine.spec.run_spec``: the rule's choices, or the values it suggests)."""
    from engine.catalog.fields import field_at, offered
    from engine.spec.run_spec import RunSpec

    f, _ = field_at(RunSpec, path)
    if spec_default:
        kw["default"] = f.default
    parser.add_argument(flag, choices=list(offered(f.metadata)), **kw)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", help="DuckDB file (default $INFLUENCE_STORE or data/influence.duckdb)")
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    common.add_argument("--no-ingest", action="store_true",
                        help="only write the run folder (the app, which owns the store, ingests it)")
    from engine.catalog.analyses import ANALYSES

    stages = argparse.ArgumentParser(add_help=False)
    stages.add_argument("--analyses", metavar="LIST",
                        help="analysis stages to run, overriding the spec: all, none, or a comma-separated list "
                             f"of {', '.join(ANALYSES)} (demo default: all of them)")
    p = argparse.ArgumentParser(prog="python -m engine", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    _add_run_commands(sub, common, stages)
    _add_attribute_command(sub, common, stages)
    _add_store_commands(sub, common)
    _add_worker_commands(sub, common)
    _add_query_commands(sub, common)
    return p


def _add_run_commands(sub, common, stages) -> None:
    from engine.spec.presets import DEMO_TASKS

    s = sub.add_parser("run", parents=[common, stages], help="run a spec file")
    s.add_argument("spec")
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("plan", help="predict a spec's peak memory per stage and its disk, before running it")
    s.add_argument("spec")
    s.add_argument("--device", choices=("cpu", "cuda"), help="plan for this device (default: the spec's)")
    s.add_argument("--memory-gb", type=float, help="host memory to fit (default: this machine's)")
    s.add_argument("--gpu-memory-gb", type=float, help="GPU memory to fit (default: the GPU here, if any)")
    s.add_argument("--json", action="store_true", help="the plan as JSON")
    s.set_defaults(fn=cmd_plan)

    s = sub.add_parser("demo", parents=[common, stages], help="the 'quick' preset on a built-in model")
    _spec_flag(s, "--model", "model.name")
    _spec_flag(s, "--device", "device")
    s.add_argument("--task", default="grammars", choices=list(DEMO_TASKS),
                   help="grammars: class attribution over 10 rules; harmful_s: find the harmful training rows")
    s.add_argument("--name", help="run name (default demo-<model>, or demo-<task>-<model> for harmful_s)")
    s.set_defaults(fn=cmd_demo)


def _add_attribute_command(sub, common, stages) -> None:
    s = sub.add_parser("attribute", parents=[common, stages],
                       help="attribute your own LoRA adapter (no fine-tuning): which training samples drive it")
    s.add_argument("--model", required=True,
                   help="base model: built-in name, id in the local HF cache, or a local folder")
    s.add_argument("--adapter", required=True, help="peft adapter folder (adapter_config.json + safetensors)")
    s.add_argument("--checkpoints", nargs="*", metavar="DIR",
                   help="intermediate checkpoints in training order, or a folder of checkpoint-<step> folders")
    s.add_argument("--dataset", required=True,
                   help="the training (and test) data: JSONL/CSV/Parquet/HF folder with a split column or train/test")
    s.add_argument("--methods", help="comma-separated methods (default: all)")
    s.add_argument("--name", help="run name (default <task>-<model>-<hash>)")
    s.add_argument("--template", help="prompt template the adapter was trained with ({prompt} ... {response})")
    _spec_flag(s, "--loss-on", "train.loss_on", help="the loss the adapter was trained on (default response)")
    s.add_argument("--max-length", type=int, default=128, help="tokens per sample (default 128)")
    _spec_flag(s, "--score-checkpoints", "scoring.checkpoints",
               help="score the final adapter only, or every checkpoint")
    _spec_flag(s, "--device", "device")
    _spec_flag(s, "--dtype", "dtype")
    _spec_flag(s, "--load-in", "model.load_in", help="a base quantized with bitsandbytes, as QLoRA trained it (CUDA)")
    s.add_argument("--trust-remote-code", action="store_true", help="run code shipped with the base model")
    s.set_defaults(fn=cmd_attribute)


def _add_store_commands(sub, common) -> None:
    s = sub.add_parser("import-dataset", parents=[common], help="validate and keep a dataset")
    s.add_argument("path")
    s.add_argument("--name", required=True)
    s.set_defaults(fn=cmd_import_dataset)

    s = sub.add_parser("import-scores", parents=[common], help="import an external IF matrix (wide CSV)")
    s.add_argument("--dataset", required=True)
    s.add_argument("--scores", required=True)
    s.add_argument("--method", required=True)
    s.add_argument("--run", required=True)
    s.add_argument("--k", type=int)
    s.set_defaults(fn=cmd_import_scores)

    s = sub.add_parser("report", parents=[common], help="metrics of a run")
    s.add_argument("--run", required=True)
    s.add_argument("--k", type=int)
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_report)

    s = sub.add_parser("ingest", parents=[common], help="ingest new run folders into the store")
    s.set_defaults(fn=cmd_ingest)

    s = sub.add_parser("rebuild-store", parents=[common], help="recreate the store from the run folders")
    s.set_defaults(fn=cmd_rebuild_store)


def _add_worker_commands(sub, common) -> None:
    s = sub.add_parser("tokens", parents=[common],
                       help="token-level attribution: each training token's share of the scores of one run")
    s.add_argument("--run", required=True, help="run name (a folder in the runs directory)")
    s.add_argument("--checkpoint", type=int, required=True, help="a scored checkpoint of the run")
    s.add_argument("--train", required=True, metavar="I[,J...]", help="training sample id(s)")
    s.add_argument("--methods", help="comma-separated methods (default: every method of the run)")
    s.add_argument("--tokens-dir", help="where results go (default $INFLUENCE_TOKENS or tokens/ next to the store)")
    _spec_flag(s, "--device", "device", spec_default=False, help="default: the run's own")
    s.set_defaults(fn=cmd_tokens)

    s = sub.add_parser("worker", parents=[common],
                       help="claim queued jobs (submitted from the app's Jobs page) and run them, oldest first")
    s.add_argument("--jobs", help="jobs folder (default $INFLUENCE_JOBS or jobs/ next to the store)")
    s.add_argument("--once", action="store_true", help="exit when the queue is empty")
    s.add_argument("--poll", type=float, default=1.0, help="seconds between looks at an empty queue")
    s.set_defaults(fn=cmd_worker)


def _add_query_commands(sub, common) -> None:
    s = sub.add_parser("index", parents=[common], help="build the query index of an existing run (for `query`)")
    s.add_argument("--run", required=True, help="run name (a folder in the runs directory)")
    s.add_argument("--force", action="store_true", help="rebuild an index the run already has")
    s.set_defaults(fn=cmd_index)

    s = sub.add_parser("query", parents=[common],
                       help="attribute a new prompt (or, with --candidate, a new training text) against a run")
    s.add_argument("--run", required=True, help="run name (a folder in the runs directory)")
    s.add_argument("--prompt", required=True, help="the prompt (with --candidate: the candidate's prompt)")
    s.add_argument("--response", help="its response (default: empty)")
    s.add_argument("--generate", action="store_true", help="the response is the fine-tuned model's greedy answer")
    s.add_argument("--candidate", action="store_true",
                   help="score the text as a new TRAINING sample against the run's test prompts")
    s.add_argument("--methods", help="comma-separated (default: every method of the run that can answer)")
    s.add_argument("--k", type=int, help="how many best samples per method (default 10)")
    s.add_argument("--json", action="store_true", help="a JSON list of {method, rank, train_id|test_id, score}")
    s.add_argument("--no-server", action="store_true", help="load the run in this process even if a server runs")
    s.set_defaults(fn=cmd_query)

    s = sub.add_parser("serve-query", parents=[common],
                       help="the query server: keeps runs loaded and answers queries (the app's Ask page uses it)")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: this machine only)")
    s.add_argument("--port", type=int, default=0, help="port (default: a free one, written to query-server.json)")
    s.add_argument("--advertise", help="host name clients should use (compose: the service name)")
    s.add_argument("--max-runs", type=int, default=2, help="runs kept loaded at once")
    s.add_argument("--memory-mb", type=int, help="index tensors kept in memory per run (default: all)")
    s.add_argument("--preload", metavar="RUN[,RUN]", help="runs to load at start")
    s.set_defaults(fn=cmd_serve_query)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


# Errors that reach the user as ``error: MESSAGE`` and exit status 2 (no traceback): bad input, a model or features
# a step cannot use, and the store's own errors (locked, corrupt, unknown run, bad query argument).
USER_ERRORS = (InputError, EngineStateError)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (0, 2 for an ``error:``, 130 when interrupted).

    While it runs, SIGTERM unwinds like Ctrl-C (so a cancelled job removes its temp run folder), FutureWarnings
    are hidden and warnings are logged; the previous SIGTERM handler, warning filters and root log handlers
    are restored on return, so in-process callers (tests, embedding tools) are left as they were.
    """
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if getattr(args, "k", None) is not None and args.k <= 0:
        print("error: --k must be positive", file=sys.stderr)
        return 2
    from store.errors import StoreError

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    # SIGTERM (a cancelled job) unwinds like Ctrl-C: temp run folders are removed. The worker handles it itself.
    # Signal handlers can only be set from the main thread.
    own_sigterm = args.fn is not cmd_worker and threading.current_thread() is threading.main_thread()
    old_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt) if own_sigterm else None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            logging.basicConfig(level=logging.WARNING)
            args.fn(args)
    except (*USER_ERRORS, StoreError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was committed", file=sys.stderr)
        return 130
    finally:
        if own_sigterm:
            signal.signal(signal.SIGTERM, old_sigterm)
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)
    return 0

