"""Import an externally computed influence matrix (e.g. the paper's cached CSVs) as a run.

Input: a wide CSV with one row per test sample and one column per training index ``0..n_train-1`` (a leading
index column, as pandas writes it, is allowed). Values are influence values IF where the MOST
influential training sample is the MOST NEGATIVE (the paper's convention); we store ``s = -IF`` so that larger
means more responsible, like every other method. The result is a run folder of kind "imported" with
checkpoint 0, scored by the same metric code as computed runs, so both give identical numbers.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd

from engine.data.tasks import load_dataset
from engine.data.tasks.base import check_task
from engine.errors import InputError
from engine.evaluation import metrics
from engine.evaluation.tables import Evaluation, loss_table, samples_table, scores_table
from engine.runfolder.writer import open_run

_METHOD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def read_influence_csv(path: Path, n_test: int, n_train: int) -> np.ndarray:
    """Read and validate the wide CSV; return IF values [n_test, n_train] float64."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"score file {path}: cannot be read ({e.strerror})") from None
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"score file {path}: not UTF-8 text (byte {e.start})") from None
    try:
        df = pd.read_csv(path, encoding="utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise InputError(f"score file {path}: not a readable CSV ({e})") from None
    if len(df.columns) == n_train + 1 and str(df.columns[0]) != "0":
        df = df.iloc[:, 1:]  # a leading index column (pandas writes "Unnamed: 0" or the index's name)
    expected = [str(i) for i in range(n_train)]
    cols = [str(c) for c in df.columns]
    if cols != expected:
        missing = sorted(set(expected) - set(cols), key=lambda c: int(c) if c.isdigit() else -1)[:5]
        extra = [c for c in cols if c not in set(expected)][:5]
        raise InputError(f"score file {path}: columns must be training indices 0..{n_train - 1} in order "
                         f"(the dataset has {n_train} training samples); got {len(cols)} columns"
                         + (f", missing {missing}" if missing else "") + (f", unexpected {extra}" if extra else ""))
    if len(df) != n_test:
        raise InputError(f"score file {path}: has {len(df)} rows but the dataset has {n_test} test samples")
    values = df.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        r, c = bad[0]
        raise InputError(f"score file {path}: row {r + 1} (test sample {r}), column {cols[c]!r} is not a "
                         f"finite number: {df.iat[r, c]!r}")
    return values


def import_scores(dataset: Path, scores_csv: Path, method: str, run: str, runs_dir: Path,
                  k: int | None = None) -> Path:
    """Validate everything, then write the run folder atomically; return it."""

    if not _METHOD_RE.match(method or ""):
        raise InputError(f"--method {method!r} is invalid: use letters, digits, '_', '-', '.'")
    task = load_dataset(dataset)
    check_task(task)
    IF = read_influence_csv(Path(scores_csv), len(task.test), len(task.train))
    S = -IF
    train_labels = [s.label for s in task.train]
    test_labels = [s.label for s in task.test]
    k = k or metrics.default_k(train_labels)
    ev = Evaluation(train_labels, test_labels, k)
    ev.add(method, 0, S)
    digest = hashlib.sha256(Path(scores_csv).read_bytes()).hexdigest()
    with open_run(runs_dir, run) as writer:
        writer.write_table("samples.parquet", samples_table(task))
        writer.write_table(f"scores/{method}-ckpt0.parquet", scores_table(method, 0, S))
        writer.write_table("train_loss.parquet", loss_table([]))
        ev.write(writer)
        spec = {"dataset": str(dataset), "scores": str(scores_csv), "method": method, "k": k,
                "sign": "stored score = -IF"}
        return writer.commit({
            "run": run, "kind": "imported", "spec": spec, "spec_hash": digest, "model": "external",
            "task": task.name, "methods": [method], "checkpoints": [0], "n_train": len(task.train),
            "n_test": len(task.test), "labels": task.labels, "k_default": k,
        })
