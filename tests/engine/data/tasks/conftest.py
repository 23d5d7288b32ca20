"""Fixtures for the task tests: a small reference dataset and writers for each on-disk format.

The Hugging Face ``save_to_disk`` layout is written with pyarrow alone, the way ``datasets`` writes it: an
Arrow IPC *stream* per data file, ``state.json`` naming the files, ``dataset_info.json`` and a top-level
``dataset_dict.json``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.data.tasks.base import Sample, TaskData
from engine.data.tasks.generators import build_task


@pytest.fixture
def small_task() -> TaskData:
    """A small real dataset: 5 emotion labels x (3 train + 2 test) rows."""
    return build_task("emotion", seed=3, n_train_per_label=3, n_test_per_label=2)


def rows(samples: tuple[Sample, ...], paper: bool, split: str | None = None) -> list[dict]:
    """Samples as dicts, in the paper's column names (``prompts``, ``variation``) or ours."""
    p, lab = ("prompts", "variation") if paper else ("prompt", "label")
    out = [{p: s.prompt, "response": s.response, lab: s.label} for s in samples]
    if split is not None:
        out = [{**r, "split": split} for r in out]
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_csv(path: Path, records: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return path


def write_parquet(path: Path, records: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def write_arrow_stream(path: Path, records: list[dict]) -> Path:
    table = pa.Table.from_pylist(records)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return path


def write_hf_split(folder: Path, chunks: list[list[dict]]) -> Path:
    """One save_to_disk split folder with ``len(chunks)`` data files."""
    folder.mkdir(parents=True)
    n = len(chunks)
    names = [f"data-{i:05d}-of-{n:05d}.arrow" for i in range(n)]
    for name, chunk in zip(names, chunks):
        write_arrow_stream(folder / name, chunk)
    features = {k: {"dtype": "string", "_type": "Value"} for k in chunks[0][0]}
    (folder / "dataset_info.json").write_text(json.dumps({"citation": "", "description": "", "features": features}))
    (folder / "state.json").write_text(json.dumps({
        "_data_files": [{"filename": name} for name in names], "_fingerprint": "0123456789abcdef",
        "_format_columns": None, "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False,
        "_split": folder.name,
    }))
    return folder


def write_hf_dataset(folder: Path, splits: dict[str, list[list[dict]]]) -> Path:
    """A save_to_disk DatasetDict: ``splits`` maps a split name to its data files' rows."""
    folder.mkdir(parents=True)
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": list(splits)}))
    for split, chunks in splits.items():
        write_hf_split(folder / split, chunks)
    return folder


@pytest.fixture
def fmt() -> SimpleNamespace:
    """The writers above, for test modules (which should not import conftest directly)."""
    return SimpleNamespace(rows=rows, jsonl=write_jsonl, csv=write_csv, parquet=write_parquet,
                           arrow=write_arrow_stream, hf_split=write_hf_split, hf_dataset=write_hf_dataset)
