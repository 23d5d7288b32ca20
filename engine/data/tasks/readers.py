"""Reading one data file into rows, whatever its format: JSONL, CSV, Parquet, Arrow (IPC stream or file).

Readers only parse; they do not check columns or values (see :mod:`engine.data.tasks.importers`). Each row keeps a
locator for error messages: ``line N`` (the 1-based line in the file) for the text formats, ``row N`` (the
1-based row index) for the columnar ones. Every failure is an InputError naming the file.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from engine.errors import InputError

EXTENSIONS = (".jsonl", ".ndjson", ".csv", ".parquet", ".pq", ".arrow")


@dataclass(frozen=True)
class Table:
    """The rows of one file: ``columns`` in file order, ``rows`` as (locator, {column: value})."""

    path: Path
    columns: tuple[str, ...]
    rows: tuple[tuple[str, dict], ...]


def read_table(path: Path) -> Table:
    """Read ``path`` by its extension (one of :data:`EXTENSIONS`)."""
    ext = path.suffix.lower()
    if ext not in EXTENSIONS:
        kind = ext or "(no extension)"
        raise InputError(f"{path}: unknown file type {kind!r}; use one of {', '.join(EXTENSIONS)}")
    if ext in (".jsonl", ".ndjson"):
        return _read_jsonl(path)
    if ext == ".csv":
        return _read_csv(path)
    if ext in (".parquet", ".pq"):
        return _from_arrow(path, _read_parquet(path))
    return _from_arrow(path, _read_arrow(path))


def _read_text(path: Path) -> str:
    """The file as UTF-8 text (a leading byte-order mark dropped); non-UTF-8 bytes are located exactly."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise InputError(
            f"{path}: not UTF-8 text: byte offset {e.start} (line {line}) is {data[e.start:e.start + 1]!r}; "
            "re-save the file as UTF-8"
        ) from None
    return text.removeprefix("\ufeff")


def _read_jsonl(path: Path) -> Table:
    columns: dict[str, None] = {}
    rows = []
    # split on "\n" only: str.splitlines would also split on U+2028 etc., which JSON strings may contain raw
    for n, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}, line {n}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{path}, line {n}: expected a JSON object per line, got {type(obj).__name__}")
        columns.update(dict.fromkeys(obj))
        rows.append((f"line {n}", obj))
    return Table(path, tuple(columns), tuple(rows))


def _read_csv(path: Path) -> Table:
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return Table(path, (), ())
        rows = []
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                raise InputError(f"{path}, line {reader.line_num}: {len(values)} fields, but the header has "
                                 f"{len(header)}")
            rows.append((f"line {reader.line_num}", dict(zip(header, values))))
    except csv.Error as e:
        raise InputError(f"{path}, line {reader.line_num}: malformed CSV ({e})") from None
    return Table(path, tuple(header), tuple(rows))


def _read_parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"{path}: cannot read as Parquet ({e})") from None


def _read_arrow(path: Path) -> pa.Table:
    """An Arrow IPC file: the stream format (what ``datasets.save_to_disk`` writes) or the random-access one."""
    try:
        with pa.OSFile(str(path)) as f:
            return pa.ipc.open_stream(f).read_all()
    except (pa.ArrowException, OSError):
        pass
    try:
        with pa.OSFile(str(path)) as f:
            return pa.ipc.open_file(f).read_all()
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"{path}: cannot read as an Arrow IPC stream or file ({e})") from None


def _from_arrow(path: Path, table: pa.Table) -> Table:
    rows = tuple((f"row {i}", row) for i, row in enumerate(table.to_pylist(), start=1))
    return Table(path, tuple(table.column_names), rows)
