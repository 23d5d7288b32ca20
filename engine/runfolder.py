"""Run folders: the immutable on-disk result of one run, and the only thing `store/` ingests.

Layout of ``<runs_dir>/<run_name>/`` (every table is a Parquet file; column types in brackets)::

    manifest.json        written last; see below
    samples.parquet      split [str: "train"|"test"], sample_id [int32], prompt, response, label [str]
    scores/*.parquet     method [str], checkpoint [int32], test_id [int32], train_id [int32], score [float32]
                         (any number of files; typically one per method, checkpoint and train shard)
    metrics.parquet      method, checkpoint, k [int32], acc, coverage, auprc, chance_acc, chance_coverage,
                         best_coverage [float64], n_distinct_top1 [int32]
    label_metrics.parquet  method, checkpoint, k, label, n_test [int32], acc, coverage [float64]
    agreement.parquet    checkpoint, method_a, method_b, k, spearman, overlap [float64]
    train_loss.parquet   epoch [int32], step [int32], loss [float64]      (empty for imported scores)
    checkpoints/epoch-<e>/   peft adapter (safetensors) per epoch; not ingested

``checkpoint`` is the epoch number (1-based) whose adapter produced the scores; 0 means "not from our
fine-tuning" (imported scores). Score sign: larger = more responsible (see ``engine.methods.base``).

``manifest.json``::

    {"format": 1, "run": NAME, "status": "complete", "created": ISO-8601, "spec": {...}, "spec_hash": HEX,
     "kind": "pipeline"|"imported", "model": STR, "task": STR, "methods": [...], "checkpoints": [...],
     "n_train": INT, "n_test": INT, "labels": [...], "k_default": INT,
     "versions": {"python":..., "torch":..., ...}, "files": {"samples.parquet": ROWS, "scores/x.parquet": ROWS, ...}}

Atomicity: everything is written into a hidden sibling folder ``.<run_name>.tmp-<pid>`` and renamed into
place only after ``manifest.json`` is written with ``status: complete``. A killed run leaves only the hidden
temp folder, which readers ignore (`is_complete` is False for it). A re-run moves the old folder aside to
``.<run_name>.old-<pid>`` for the instant of the swap and then deletes it. The next run of the same name deletes
what dead processes left of either kind (putting a complete ``.old-`` folder back if no run is at the final
path, i.e. the process died between the two renames).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import shutil
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TMP_TAG, OLD_TAG = ".tmp-", ".old-"  # hidden siblings ``.<name><tag><pid>``: a run being written, a replaced run
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_run_name(name: str) -> str:
    """Return ``name`` if it is a safe folder name, else raise ValueError naming the field."""
    from engine.errors import InputError

    if not _NAME_RE.match(name or ""):
        raise InputError(
            f"run name {name!r} is invalid: use 1-128 letters, digits, '_', '-' or '.', not starting with a dot"
        )
    return name


def package_versions() -> dict[str, str]:
    """Versions recorded in every manifest, so a run can be reproduced."""
    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "peft", "numpy", "pyarrow", "duckdb"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    from engine import __version__

    out["engine"] = __version__
    return out


class RunWriter:
    """Writes tables into a temp folder; :meth:`commit` writes the manifest and renames into place."""

    def __init__(self, tmp: Path, final: Path):
        self.tmp = tmp
        self.final = final
        self.files: dict[str, int] = {}

    def write_table(self, relpath: str, table: pa.Table) -> None:
        """Write ``table`` as Parquet at ``relpath`` (relative to the run folder)."""
        path = self.tmp / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, compression="zstd")
        self.files[relpath] = table.num_rows

    def path(self, relpath: str) -> Path:
        """A path inside the temp folder for non-table artefacts (e.g. adapters)."""
        p = self.tmp / relpath
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def commit(self, manifest: dict) -> Path:
        manifest = {
            "format": FORMAT_VERSION,
            "status": "complete",
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": package_versions(),
            **manifest,
            "files": dict(sorted(self.files.items())),
        }
        data = json.dumps(manifest, indent=2, sort_keys=True, default=str)
        (self.tmp / (MANIFEST + ".part")).write_text(data, encoding="utf-8")
        os.replace(self.tmp / (MANIFEST + ".part"), self.tmp / MANIFEST)
        if self.final.exists():
            # Re-running the same spec replaces the old folder: move it aside first so that at every
            # moment a complete folder (old or new) sits at the final path or nothing does. A leftover
            # ``.old-<pid>`` of this process (an earlier removal that failed) would make the move fail.
            old = self.final.with_name(f".{self.final.name}{OLD_TAG}{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.final, old)
            os.replace(self.tmp, self.final)
            shutil.rmtree(old, ignore_errors=True)  # if this is cut short, the next open_run removes the rest
        else:
            os.replace(self.tmp, self.final)
        return self.final


@contextmanager
def open_run(runs_dir: Path, name: str) -> Iterator[RunWriter]:
    """Context manager yielding a :class:`RunWriter`; unless it was committed, the temp folder is removed."""
    check_run_name(name)
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    _remove_dead_temps(runs_dir, name)
    tmp = runs_dir / f".{name}{TMP_TAG}{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    writer = RunWriter(tmp, runs_dir / name)
    try:
        yield writer
    finally:  # an exception, or a block that ended without commit: the temp folder goes (commit renamed it)
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_dead_temps(runs_dir: Path, name: str) -> None:
    """Delete the hidden folders that runs of ``name`` whose process died left behind (SIGKILL, or a signal
    during clean-up, skips it): ``.<name>.tmp-<pid>`` (a run being written) and ``.<name>.old-<pid>`` (the
    previous run, moved aside by :meth:`RunWriter.commit`). A complete ``.old-`` folder is put back instead
    when its process died between the two renames of the commit, leaving no run at the final path."""
    final = runs_dir / name
    for tag in (TMP_TAG, OLD_TAG):
        for p in runs_dir.glob(f".{name}{tag}*"):
            pid = p.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or int(pid) == os.getpid() or pid_alive(int(pid)):
                continue
            if tag == OLD_TAG and not final.exists() and _checked_manifest(p) is not None:
                os.replace(p, final)
            else:
                shutil.rmtree(p, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_manifest(folder: Path) -> dict | None:
    """The manifest of a complete run folder, or None if ``folder`` is not one (temp, killed, foreign)."""
    folder = Path(folder)
    if folder.name.startswith("."):
        return None
    return _checked_manifest(folder)


def _checked_manifest(folder: Path) -> dict | None:
    """The manifest of ``folder`` if it says ``complete`` and every file it lists has its row count."""
    try:
        m = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict):
        return None
    if m.get("status") != "complete" or m.get("format") != FORMAT_VERSION:
        return None
    for rel, rows in m.get("files", {}).items():
        p = folder / rel
        try:
            if not p.is_file() or pq.ParquetFile(p).metadata.num_rows != rows:
                return None
        except (OSError, pa.ArrowException):  # truncated or corrupt Parquet: not a complete run
            return None
    return m


def is_complete(folder: Path) -> bool:
    return read_manifest(folder) is not None


def list_complete_runs(runs_dir: Path) -> list[Path]:
    """Complete run folders under ``runs_dir``, sorted by name."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return sorted(p for p in runs_dir.iterdir() if p.is_dir() and is_complete(p))
