"""Rewrite the golden files of ``tests/engine/pipeline/test_golden_scores.py`` from the tiny pipeline run today.

    .venv/bin/python scripts/regenerate_golden.py [--all-methods]

Only for an INTENDED change of the fine-tuning or the scoring (see that test module's docstring), and say so in
the commit message. Runs ``run_pipeline(TINY_SPEC)`` (the spec of ``tests/conftest.py``, on the CPU) in a temporary
folder with its own feature cache, then writes

- the scores file: every score row of the kept methods, sorted by the test's ``KEY``;
- the metrics file: the test's ``METRIC_COLUMNS`` of the kept methods, sorted by (method, checkpoint);

keeping the methods each file holds today (``--all-methods``: every method the run scored). Before writing, it
prints how far each kept method's scores moved from the files it replaces. File names, sort key and columns come
from the test module, the spec from the conftest: one source for each.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.paths import FEATURES_ENV  # noqa: E402  (after the path set-up above)


def _load(name: str, path: Path):
    """The module at ``path`` (the test files are not in a package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# one source each: the files, KEY and METRIC_COLUMNS from the test; the spec its tiny_run fixture runs
golden = _load("test_golden_scores", REPO / "tests" / "engine" / "pipeline" / "test_golden_scores.py")
TINY_SPEC = _load("tests_conftest", REPO / "tests" / "conftest.py").TINY_SPEC


def _kept(df: pd.DataFrame, path: Path, all_methods: bool) -> pd.DataFrame:
    """The rows of the methods the file at ``path`` holds today (all rows with ``all_methods`` or no file)."""
    if all_methods or not path.exists():
        return df
    known = set(pq.read_table(path, columns=["method"]).column("method").to_pylist())
    missing = sorted(known - set(df.method))
    if missing:
        raise SystemExit(f"{path.name} holds methods the tiny run no longer scores: {missing}")
    return df[df.method.isin(known)]


def _write(df: pd.DataFrame, path: Path) -> None:
    pq.write_table(pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False), path)


def _report(new: pd.DataFrame, path: Path) -> None:
    """Per method, the largest change of a score relative to the method's largest score in the old file."""
    if not path.exists():
        return
    old = pq.read_table(path).to_pandas().sort_values(golden.KEY)
    for method, o in old.groupby("method"):
        n = new[new.method == method]
        if len(n) != len(o) or not np.array_equal(n[golden.KEY[1:]].to_numpy(), o[golden.KEY[1:]].to_numpy()):
            print(f"  {method:<14} rows differ ({len(o)} -> {len(n)})")
            continue
        scale = max(float(np.abs(o.score.to_numpy(float)).max()), np.finfo(float).tiny)
        moved = float(np.abs(n.score.to_numpy(float) - o.score.to_numpy(float)).max()) / scale
        print(f"  {method:<14} max |new - old| / max |old| = {moved:.2e}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--all-methods", action="store_true",
                    help="keep every method the tiny run scores, not only those the golden files hold today")
    args = ap.parse_args(argv)

    from engine.pipeline.run import run_pipeline
    from engine.spec.load import spec_from_dict

    spec = spec_from_dict({**TINY_SPEC, "device": "cpu"})  # the CPU reference (the test suite's machine)
    with tempfile.TemporaryDirectory(prefix="golden-") as tmp:
        os.environ[FEATURES_ENV] = str(Path(tmp) / "features")  # never reuse features cached by another run
        folder = run_pipeline(spec, Path(tmp) / "runs", progress=False)
        scores = pq.read_table(folder / "scores").to_pandas()
        metrics = pq.read_table(folder / "metrics.parquet").to_pandas()

    scores = _kept(scores, golden.SCORES, args.all_methods).sort_values(golden.KEY)
    metrics = _kept(metrics[golden.METRIC_COLUMNS], golden.METRICS, args.all_methods).sort_values(
        ["method", "checkpoint"])
    print(f"scores of {scores.method.nunique()} methods: {', '.join(sorted(scores.method.unique()))}")
    _report(scores, golden.SCORES)
    _write(scores, golden.SCORES)
    _write(metrics, golden.METRICS)
    print(f"wrote {golden.SCORES.relative_to(REPO)} ({len(scores)} rows) and {golden.METRICS.relative_to(REPO)} "
          f"({len(metrics)} rows)")


if __name__ == "__main__":
    main()
