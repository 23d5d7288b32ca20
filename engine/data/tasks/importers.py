"""Importing a user's dataset as a :class:`TaskData`: :func:`load_dataset` and :func:`load_splits`.

Accepted layouts (auto-detected by :func:`load_dataset`):

- a Hugging Face ``save_to_disk`` DatasetDict folder: ``dataset_dict.json`` listing the splits, and per split a
  folder with ``state.json`` whose ``_data_files`` name the ``data-0000i-of-0000N.arrow`` files (Arrow IPC
  streams), read with pyarrow only (the ``datasets`` library is not needed);
- a folder holding ``train.<ext>`` and ``test.<ext>`` (or ``train/`` and ``test/`` save_to_disk split folders);
- one JSONL / CSV / Parquet / Arrow file with a ``split`` column whose values are ``train`` or ``test``.

:func:`load_splits` takes the train and test data separately (a file, or a save_to_disk split folder each);
there a ``split`` column is not needed and, if present, ignored.

Columns are the paper's (``prompts``, ``response``, ``variation``) or ours (``prompt``, ``response``,
``label``), mixed freely; other columns are ignored. Integer labels become strings. Labels are optional: a
dataset without a label column, or whose label column is empty on every row, is unlabelled (every
``Sample.label`` is None; what needs labels is left out downstream); one with labels on some rows only is refused,
naming the first row without one. Text fields hold at most
:data:`MAX_FIELD_CHARS` characters and no control characters besides tab and newline. Every problem raises
InputError naming the file and, where it applies, the row (``line N`` / ``row N``) and the field. Nothing is
written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from engine.errors import InputError
from engine.data.tasks.base import Sample, TaskData
from engine.data.tasks.readers import EXTENSIONS, Table, read_table

FIELDS = {"prompt": ("prompt", "prompts"), "response": ("response",), "label": ("label", "variation")}
OPTIONAL_FIELDS = ("label",)  # a dataset without it is unlabelled
SPLITS = ("train", "test")


def load_dataset(path: str | Path, name: str | None = None) -> TaskData:
    """Read a dataset folder or single file (see the module docstring); ``name`` defaults to its file stem."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        train, test = _read_folder(path)
    else:
        train, test = _split_by_column(read_table(path))
    return _task(name or path.stem, path, train, test)


def load_splits(train_path: str | Path, test_path: str | Path, name: str | None = None) -> TaskData:
    """Read train and test data from separate sources; ``name`` defaults to the train source's parent folder."""
    train_path, test_path = Path(train_path), Path(test_path)
    train, test = _read_split(train_path), _read_split(test_path)
    return _task(name or train_path.resolve().parent.name, train_path, train, test)


def _read_split(path: Path) -> list[Table]:
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    return _read_hf_split(path) if path.is_dir() else [read_table(path)]


def _read_folder(folder: Path) -> tuple[list[Table], list[Table]]:
    if (folder / "dataset_dict.json").exists():
        return _read_hf_dict(folder)
    if (folder / "state.json").exists():
        raise InputError(f"{folder}: this is one split of a save_to_disk dataset; pass the folder above it (with "
                         "dataset_dict.json), or give train and test separately")
    found = []
    for split in SPLITS:
        candidates = sorted(p for p in folder.iterdir() if p.stem.lower() == split
                            and (p.is_dir() or p.suffix.lower() in EXTENSIONS))
        if not candidates:
            files = " / ".join(split + ext for ext in EXTENSIONS)
            raise InputError(f"{folder}: no {split} data; expected a dataset_dict.json (save_to_disk), or "
                             f"{files}, or a {split}/ save_to_disk split folder")
        if len(candidates) > 1:
            raise InputError(f"{folder}: more than one {split} source: {', '.join(p.name for p in candidates)}")
        found.append(_read_split(candidates[0]))
    return found[0], found[1]


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None


def _read_hf_dict(folder: Path) -> tuple[list[Table], list[Table]]:
    meta = folder / "dataset_dict.json"
    splits = _read_json(meta)
    splits = splits.get("splits") if isinstance(splits, dict) else None
    if not isinstance(splits, list):
        raise InputError(f"{meta}: field 'splits' must be a list of split names")
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        raise InputError(f"{meta}: 'splits' lists {splits}; missing {', '.join(missing)} (need train and test)")
    return _read_hf_split(folder / "train"), _read_hf_split(folder / "test")


def _read_hf_split(folder: Path) -> list[Table]:
    """A save_to_disk split folder: the Arrow files ``state.json`` lists, else ``data-*.arrow`` in name order."""
    if not folder.is_dir():
        raise InputError(f"{folder}: split folder not found")
    state_path = folder / "state.json"
    if state_path.exists():
        state = _read_json(state_path)
        entries = state.get("_data_files") if isinstance(state, dict) else None
        if not isinstance(entries, list) or not entries or not all(
                isinstance(e, dict) and isinstance(e.get("filename"), str) for e in entries):
            raise InputError(f"{state_path}: field '_data_files' must be a non-empty list of {{\"filename\": ...}}")
        files = [folder / e["filename"] for e in entries]
        for f in files:
            if not f.is_file():
                raise InputError(f"{state_path}: '_data_files' lists {f.name}, which does not exist")
    else:
        files = sorted(folder.glob("data-*.arrow"))
        if not files:
            raise InputError(f"{folder}: no state.json and no data-*.arrow files")
    return [read_table(f) for f in files]


def _columns(table: Table, need_split: bool = False) -> dict[str, str]:
    """Map each field (prompt, response, label[, split]) to the table's column for it (label only when the table
    has one: it is optional)."""
    if not table.columns:
        raise InputError(f"{table.path}: the file is empty")
    found, missing = {}, []
    for field, aliases in FIELDS.items():
        present = [a for a in aliases if a in table.columns]
        if len(present) > 1:
            raise InputError(f"{table.path}: both {' and '.join(map(repr, present))} columns; keep one")
        if present:
            found[field] = present[0]
        elif field not in OPTIONAL_FIELDS:
            missing.append("/".join(aliases))
    if need_split:
        if "split" in table.columns:
            found["split"] = "split"
        else:
            missing.append("split (a single file needs it: 'train' or 'test' per row; or give train and test "
                           "files separately)")
    if missing:
        raise InputError(f"{table.path}: missing column(s): {'; '.join(missing)}. "
                         f"Columns found: {', '.join(table.columns) or '(none)'}")
    return found


def _split_by_column(table: Table) -> tuple[list[Table], list[Table]]:
    column = _columns(table, need_split=True)["split"]
    parts: dict[str, list] = {s: [] for s in SPLITS}
    for where, row in table.rows:
        value = row.get(column)
        split = value.strip().lower() if isinstance(value, str) else None
        if split not in parts:
            raise InputError(f"{table.path}, {where}: field 'split' is {value!r}; expected 'train' or 'test'")
        parts[split].append((where, row))
    return ([Table(table.path, table.columns, tuple(parts["train"]))],
            [Table(table.path, table.columns, tuple(parts["test"]))])


MAX_FIELD_CHARS = 100_000  # far beyond any model context (and CSV's own field limit is 131,072)
# C0 controls other than tab, newline and carriage return, and DEL: NUL bytes and terminal escape codes are
# signs of a binary or corrupted file, and would reach terminals and logs raw
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _text(value: object, table: Table, where: str, column: str) -> str:
    if _blank(value):
        raise InputError(f"{table.path}, {where}: field '{column}' is empty")
    if not isinstance(value, str):
        raise InputError(f"{table.path}, {where}: field '{column}' must be text, got {type(value).__name__}")
    if len(value) > MAX_FIELD_CHARS:
        raise InputError(f"{table.path}, {where}: field '{column}' is {len(value):,} characters long; at most "
                         f"{MAX_FIELD_CHARS:,} are accepted (is a whole document in one cell?)")
    bad = _CONTROL.search(value)
    if bad:
        raise InputError(f"{table.path}, {where}: field '{column}' contains the control character "
                         f"{bad.group()!r} at character {bad.start() + 1}; only text, tabs and newlines are accepted")
    return value


def _blank(value: object) -> bool:
    """No value: missing, None, NaN (``value != value``) or only whitespace."""
    return value is None or value != value or (isinstance(value, str) and not value.strip())


def _label(value: object, table: Table, where: str, column: str) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _text(value, table, where, column).strip()


def _labelled(tables: list[Table]) -> bool:
    """Whether the dataset has labels: some row of some table has a non-empty label (then every row must)."""
    for table in tables:
        column = _columns(table).get("label")
        if column is not None and any(not _blank(row.get(column)) for _, row in table.rows):
            return True
    return False


def _check_every_label(tables: list[Table]) -> None:
    """A labelled dataset: refuse it when a row has no label, naming the first such row in file order (a single
    file's rows are split into train and test tables; their locators keep the file's line/row numbers)."""
    missing: dict[str, tuple[int, str, str]] = {}  # file -> (number, locator, column) of its first row without
    for table in tables:
        column = _columns(table).get("label")
        if column is None:
            raise InputError(f"{table.path}: no label column (label/variation), but other files of the dataset "
                             "have labels; give a label on every row or on none")
        for where, row in table.rows:
            number = int(where.split()[-1])
            if _blank(row.get(column)) and number < missing.get(str(table.path), (number + 1,))[0]:
                missing[str(table.path)] = (number, where, column)
    if missing:
        path, (_, where, column) = next(iter(missing.items()))
        raise InputError(f"{path}, {where}: field '{column}' is empty, but other rows have labels; give a label on "
                         "every row or on none (this is the first row without one)")


def _samples(tables: list[Table], labelled: bool) -> list[Sample]:
    """The rows as samples; ``labelled``: every row has a label (checked by :func:`_check_every_label`), else every
    label is None."""
    samples = []
    for table in tables:
        cols = _columns(table)
        for where, row in table.rows:
            label = _label(row.get(cols["label"]), table, where, cols["label"]) if labelled else None
            samples.append(Sample(
                prompt=_text(row.get(cols["prompt"]), table, where, cols["prompt"]),
                response=_text(row.get(cols["response"]), table, where, cols["response"]),
                label=label,
            ))
    return samples


ID_COLUMNS = ("id", "sample_id", "uid")


def _check_ids(tables: list[Table]) -> None:
    """An optional id column (``id``/``sample_id``/``uid``) must be unique over the whole dataset: a repeated id
    usually means a sample was pasted twice or the splits overlap, which would let a test sample find itself."""
    seen: dict[str, str] = {}
    for table in tables:
        column = next((c for c in ID_COLUMNS if c in table.columns), None)
        if column is None:
            continue
        for where, row in table.rows:
            value = row.get(column)
            if value is None or value != value:
                continue
            key = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value).strip()
            here = f"{table.path}, {where}"
            if key in seen:
                raise InputError(f"{here}: field '{column}' repeats id {key!r}, first used at {seen[key]}")
            seen[key] = here


def _task(name: str, source: Path, train_tables: list[Table], test_tables: list[Table]) -> TaskData:
    """Validate the rows and (for a labelled dataset) the label sets, then assemble the TaskData."""
    _check_ids([*train_tables, *test_tables])
    labelled = _labelled([*train_tables, *test_tables])
    if labelled:
        _check_every_label([*train_tables, *test_tables])
    splits = {}
    for split, tables in zip(SPLITS, (train_tables, test_tables)):
        splits[split] = _samples(tables, labelled)
        if not splits[split]:
            raise InputError(f"{', '.join(str(t.path) for t in tables)}: the {split} split has no rows")
    if not labelled:
        return TaskData(name=name, train=tuple(splits["train"]), test=tuple(splits["test"]))
    train_labels = {s.label for s in splits["train"]}
    only_test = sorted({s.label for s in splits["test"]} - train_labels)
    if only_test:
        raise InputError(f"{source}: labels only in test: {', '.join(only_test)} — attribution cannot find a "
                         "same-label training sample")
    if len(train_labels) < 2:
        raise InputError(f"{source}: only one label ({next(iter(train_labels))!r}); attribution accuracy is "
                         "judged by label, so at least two labels are needed")
    return TaskData(name=name, train=tuple(splits["train"]), test=tuple(splits["test"]))
