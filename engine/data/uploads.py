"""Validate a dataset file uploaded through the app before anything is kept.

:func:`validate_upload` checks the bytes (size, emptiness, UTF-8 for the text formats) and then parses them
with the same importer as ``python -m engine import-dataset`` (columns, empty fields, split values, repeated
ids, label coverage, at least two labels). Every problem is an InputError whose message names the uploaded
file and the row/line or field; paths of the temporary copy never appear in messages. Nothing is written
under the data folder until :func:`keep_upload` is called with a valid dataset (an atomic folder rename).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from engine.errors import InputError
from engine.data.tasks.base import TaskData
from engine.data.datasets import save_dataset
from engine.data import tasks
from engine.paths import MAX_UPLOAD_ENV, max_upload_mb

TEXT_EXTENSIONS = (".jsonl", ".ndjson", ".csv")
EXTENSIONS = (*TEXT_EXTENSIONS, ".parquet", ".pq", ".arrow")


def max_upload_bytes() -> int:
    """``$INFLUENCE_MAX_UPLOAD_MB`` (default 50, :func:`engine.paths.max_upload_mb`) in bytes."""
    return int(max_upload_mb() * 2**20)


def validate_upload(filename: str, data: bytes, max_bytes: int | None = None) -> TaskData:
    """Parse an uploaded dataset (one file with a ``split`` column); raise InputError naming what is wrong."""
    name = Path(str(filename)).name or "upload"
    limit = max_upload_bytes() if max_bytes is None else max_bytes
    ext = Path(name).suffix.lower()
    if ext not in EXTENSIONS:
        raise InputError(f"{name}: unsupported file type {ext or '(none)'!r}; upload one of {', '.join(EXTENSIONS)}")
    if len(data) == 0:
        raise InputError(f"{name}: the file is empty")
    if len(data) > limit:
        raise InputError(f"{name}: {len(data) / 2**20:.1f} MB is over the upload limit of {limit / 2**20:.0f} MB "
                         f"(set {MAX_UPLOAD_ENV} to change it, or import large files with "
                         "`python -m engine import-dataset`)")
    if ext in TEXT_EXTENSIONS:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data[: e.start].count(b"\n") + 1
            raise InputError(f"{name}, line {line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                             f"{e.start}); save the file as UTF-8") from None
    with tempfile.TemporaryDirectory(prefix="upload-") as tmp:
        path = Path(tmp) / f"upload{ext}"
        path.write_bytes(data)
        try:
            return tasks.load_dataset(path, name=Path(name).stem)  # looked up at call time (tests patch it)
        except InputError as e:
            raise InputError(str(e).replace(str(path), name).replace(tmp, "")) from None


def keep_upload(task: TaskData, datasets_dir: str | os.PathLike, name: str) -> Path:
    """Store a validated upload as ``<datasets_dir>/<name>`` (train/test Parquet); returns the folder."""
    return save_dataset(task, Path(datasets_dir), name)


def list_datasets(datasets_dir: str | os.PathLike) -> list[str]:
    """Names of the kept datasets (folders holding train.parquet and test.parquet)."""
    d = Path(datasets_dir)
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if not p.name.startswith(".") and (p / "train.parquet").is_file()
                  and (p / "test.parquet").is_file())
