"""Fixtures for store tests: synthetic, valid run folders written with ``engine.runfolder.writer.open_run``.

``make_run`` draws random labels and scores, computes the run's metrics with plain numpy (the reference the
SQL is checked against) and returns a :class:`RunData` holding both the folder and the raw arrays.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from engine.runfolder.writer import open_run
from store.db import Store

LABELS = ("alpha", "beta", "gamma")


@dataclass
class RunData:
    folder: Path
    name: str
    train_labels: np.ndarray
    test_labels: np.ndarray
    scores: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)  # (method, ckpt) -> [n_test, n_train]
    k_default: int = 1
    train_prompts: list[str] = field(default_factory=list)

    @property
    def n_train(self) -> int:
        return len(self.train_labels)

    @property
    def n_test(self) -> int:
        return len(self.test_labels)


# ---------------------------------------------------------------------------------------------- numpy reference


def rank_order(S: np.ndarray) -> np.ndarray:
    """Per row, training indices by score descending, ties -> lowest index first (stable sort of -S)."""
    return np.argsort(-S, axis=1, kind="stable")


def reference_metrics(S: np.ndarray, train_labels, test_labels, k: int) -> dict:
    """acc, coverage@k, auprc, chance, best coverage, n_distinct_top1 of one score matrix."""
    n_test, n_train = S.shape
    order = rank_order(S)
    same = np.asarray(test_labels)[:, None] == np.asarray(train_labels)[None, :]
    rows = np.arange(n_test)[:, None]
    ranked_same = same[rows, order]
    n_same = same.sum(axis=1)
    precision = np.cumsum(ranked_same, axis=1) / np.arange(1, n_train + 1)
    ap = np.where(n_same > 0, (precision * ranked_same).sum(axis=1) / np.maximum(n_same, 1), 0.0)
    return {
        "acc": float(ranked_same[:, 0].mean()),
        "coverage": float(ranked_same[:, :k].sum() / (n_test * k)),
        "auprc": float(ap.mean()),
        "chance_acc": float((n_same / n_train).mean()),
        "chance_coverage": float((n_same / n_train).mean()),
        "best_coverage": float((np.minimum(n_same, k) / k).mean()),
        "n_distinct_top1": int(len(set(order[:, 0].tolist()))),
    }


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


# ---------------------------------------------------------------------------------------------- run folders


def make_run(
    runs_dir: Path,
    name: str,
    n_train: int = 12,
    n_test: int = 5,
    methods=("gradsim", "datainf"),
    checkpoints=(1, 2),
    seed: int = 0,
    *,
    ties: bool = False,
    nans: float = 0.0,
    shards: int = 2,
    write_metrics: bool = True,
    train_prompts: dict[int, str] | None = None,
    extra_files: dict[str, pa.Table] | None = None,
    manifest_extra: dict | None = None,
) -> RunData:
    """Write a complete run folder ``runs_dir/name`` with random labels and scores; return its data.

    ``ties``: scores rounded to one decimal so that many ties occur. ``nans``: share of scores set to NaN.
    ``shards``: score files per (method,
    checkpoint), split by training id. ``extra_files``: more tables written (and listed in the manifest).
    """
    rng = np.random.default_rng(seed)
    train_labels = rng.choice(LABELS, n_train)
    test_labels = rng.choice(LABELS, n_test)
    prompts = [f"train prompt {i} about {train_labels[i]}" for i in range(n_train)]
    for i, text in (train_prompts or {}).items():
        prompts[i] = text
    k = max(1, n_train // len(LABELS))
    data = RunData(Path(runs_dir) / name, name, train_labels, test_labels, k_default=k, train_prompts=prompts)
    for method, ckpt in itertools.product(methods, checkpoints):
        S = rng.normal(size=(n_test, n_train)).astype(np.float32)
        S = np.round(S, 1).astype(np.float32) if ties else S
        S[rng.random(S.shape) < nans] = np.nan
        data.scores[(method, ckpt)] = S

    with open_run(Path(runs_dir), name) as w:
        w.write_table("samples.parquet", _samples_table(data, rng))
        for (method, ckpt), S in data.scores.items():
            for s, cols in enumerate(np.array_split(np.arange(n_train), shards)):
                w.write_table(f"scores/{method}-c{ckpt}-s{s}.parquet", _scores_table(method, ckpt, S, cols))
        if write_metrics:
            w.write_table("metrics.parquet", _metrics_table(data, k))
            w.write_table("label_metrics.parquet", _label_metrics_table(data, k))
            w.write_table("agreement.parquet", _agreement_table(data, k))
        w.write_table("train_loss.parquet", _train_loss_table(checkpoints, rng))
        for rel, table in (extra_files or {}).items():
            w.write_table(rel, table)
        spec = {"seed": seed, "n_train": n_train, "n_test": n_test, "methods": list(methods)}
        w.commit({
            "run": name, "kind": "pipeline", "model": "tiny", "task": "grammars", "spec": spec,
            "spec_hash": hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16],
            "methods": list(methods), "checkpoints": list(checkpoints), "n_train": n_train, "n_test": n_test,
            "labels": list(LABELS), "k_default": k, **(manifest_extra or {}),
        })
    return data


def _samples_table(d: RunData, rng) -> pa.Table:
    n_train, n_test = d.n_train, d.n_test
    return pa.table({
        "split": pa.array(["train"] * n_train + ["test"] * n_test),
        "sample_id": pa.array(list(range(n_train)) + list(range(n_test)), pa.int32()),
        "prompt": pa.array(d.train_prompts + [f"test prompt {j} about {d.test_labels[j]}" for j in range(n_test)]),
        "response": pa.array([f"response {i}" for i in range(n_train)] + [f"answer {j}" for j in range(n_test)]),
        "label": pa.array(list(d.train_labels) + list(d.test_labels)),
    })


def _scores_table(method: str, ckpt: int, S: np.ndarray, cols: np.ndarray) -> pa.Table:
    n_test = S.shape[0]
    test_ids = np.repeat(np.arange(n_test), len(cols))
    train_ids = np.tile(cols, n_test)
    order = np.random.default_rng(len(cols)).permutation(len(test_ids))  # files need not be sorted
    return pa.table({
        "method": pa.array([method] * len(test_ids)),
        "checkpoint": pa.array(np.full(len(test_ids), ckpt), pa.int32()),
        "test_id": pa.array(test_ids[order], pa.int32()),
        "train_id": pa.array(train_ids[order], pa.int32()),
        "score": pa.array(S[test_ids, train_ids][order], pa.float32()),
    })


def _metrics_table(d: RunData, k: int) -> pa.Table:
    rows = [
        {"method": m, "checkpoint": c, "k": k, **reference_metrics(S, d.train_labels, d.test_labels, k)}
        for (m, c), S in d.scores.items()
    ]
    return _typed(rows, {"checkpoint": pa.int32(), "k": pa.int32(), "n_distinct_top1": pa.int32()})


def _label_metrics_table(d: RunData, k: int) -> pa.Table:
    rows = []
    for (m, c), S in d.scores.items():
        for label in LABELS:
            sel = d.test_labels == label
            if sel.any():
                r = reference_metrics(S[sel], d.train_labels, d.test_labels[sel], k)
                rows.append({"method": m, "checkpoint": c, "k": k, "label": label, "n_test": int(sel.sum()),
                             "acc": r["acc"], "coverage": r["coverage"]})
    return _typed(rows, {"checkpoint": pa.int32(), "k": pa.int32(), "n_test": pa.int32()})


def _agreement_table(d: RunData, k: int) -> pa.Table:
    rows = []
    for (ma, ca), (mb, cb) in itertools.combinations(d.scores, 2):
        if ca != cb:
            continue
        A, B = d.scores[(ma, ca)], d.scores[(mb, cb)]
        rho = np.mean([_spearman(A[j], B[j]) for j in range(len(A))])
        ta, tb = rank_order(A)[:, :k], rank_order(B)[:, :k]
        overlap = np.mean([len(set(ta[j]) & set(tb[j])) / k for j in range(len(A))])
        rows.append({"checkpoint": ca, "method_a": ma, "method_b": mb, "k": k, "spearman": rho, "overlap": overlap})
    schema = pa.schema([("checkpoint", pa.int32()), ("method_a", pa.string()), ("method_b", pa.string()),
                        ("k", pa.int32()), ("spearman", pa.float64()), ("overlap", pa.float64())])
    return pa.Table.from_pylist(rows, schema=schema)


def _train_loss_table(checkpoints, rng) -> pa.Table:
    epochs = [c for c in checkpoints if c > 0]
    steps = list(range(1, 3 * len(epochs) + 1))
    return pa.table({
        "epoch": pa.array([epochs[(s - 1) // 3] for s in steps], pa.int32()),
        "step": pa.array(steps, pa.int32()),
        "loss": pa.array(np.sort(rng.random(len(steps)))[::-1].astype(np.float64)),
    })


def _typed(rows: list[dict], ints: dict) -> pa.Table:
    table = pa.Table.from_pylist(rows)
    for name, typ in ints.items():
        table = table.set_column(table.schema.get_field_index(name), name, table[name].cast(typ))
    return table


# ---------------------------------------------------------------------------------------------- fixtures
# Tests get the helpers through fixtures rather than ``from conftest import ...``, which breaks as soon as
# another test folder has a conftest.py or the tests become packages.


@pytest.fixture(name="make_run")
def _make_run_fixture():
    """The :func:`make_run` helper: ``make_run(runs_dir, name, n_train, n_test, methods, checkpoints, seed)``."""
    return make_run


@pytest.fixture
def ref():
    """numpy reference implementations: ``ref.rank_order(S)``, ``ref.metrics(S, train_labels, test_labels, k)``."""
    return SimpleNamespace(rank_order=rank_order, metrics=reference_metrics)



@pytest.fixture
def runs_dir(tmp_path) -> Path:
    d = tmp_path / "runs"
    d.mkdir()
    return d


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "db" / "influence.duckdb"


@pytest.fixture
def store(db_path):
    with Store(db_path) as s:
        yield s
