"""Writing run folders: the immutable on-disk result of one run, and the only thing `store/` ingests.

The format (tables, columns, types, manifest fields, what "complete" means) is declared in
:mod:`engine.runfolder.runformat`; this module writes it. Atomicity: everything is written into a hidden sibling folder
``.<run_name>.tmp-<pid>`` and renamed into place only after ``manifest.json`` is written with
``status: complete``. A killed run leaves only the hidden temp folder, which readers ignore. A re-run moves the
old folder aside to ``.<run_name>.old-<pid>`` for the instant of the swap and then deletes it. The next run of
the same name deletes what dead processes left of either kind (putting a complete ``.old-`` folder back if no
run is at the final path, i.e. the process died between the two renames).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine import __version__
from engine.runfolder.runformat import (
    FORMAT_VERSION,
    MANIFEST,
    check_run_name,
    checked_manifest,
    pid_alive,
    table_of_file,
)
from engine.runfolder.score_layout import merge_score_shards, write_options

TMP_TAG, OLD_TAG = ".tmp-", ".old-"  # hidden siblings ``.<name><tag><pid>``: a run being written, a replaced run


def package_versions() -> dict[str, str]:
    """Versions recorded in every manifest, so a run can be reproduced."""
    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "peft", "numpy", "pyarrow", "duckdb"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    out["engine"] = __version__
    return out


class RunWriter:
    """Writes tables into a temp folder; :meth:`commit` writes the manifest and renames into place."""

    def __init__(self, tmp: Path, final: Path):
        self.tmp = tmp
        self.final = final
        self.files: dict[str, int] = {}

    def write_table(self, relpath: str, table: pa.Table, row_group_size: int | None = None) -> None:
        """Write ``table`` as Parquet at ``relpath`` (relative to the run folder).

        A score file (``scores/``, test-major as :func:`engine.evaluation.tables.scores_table` builds it) gets row groups of
        whole test prompts (``row_group_size`` None: :func:`engine.runfolder.score_layout.write_options`), so the store can
        read one prompt's rows without decoding the others; other tables use ``row_group_size`` or pyarrow's
        default."""
        path = self.tmp / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        options = {"compression": "zstd"}
        if table_of_file(relpath) == "scores" and table.num_rows:
            n_tests = pc.count_distinct(table.column("test_id")).as_py()
            options = write_options(table.num_rows // max(1, n_tests))
        if row_group_size is not None:
            options["row_group_size"] = row_group_size
        pq.write_table(table, path, **options)
        self.files[relpath] = table.num_rows

    def adopt(self, folder: str) -> None:
        """Count the Parquet files under ``folder`` (relative) that other processes wrote (torchrun ranks) as part
        of the run, with their row counts."""
        for p in sorted((self.tmp / folder).glob("*.parquet")):
            rel = p.relative_to(self.tmp).as_posix()
            if rel not in self.files:
                self.files[rel] = pq.ParquetFile(p).metadata.num_rows

    def path(self, relpath: str) -> Path:
        """A path inside the temp folder for non-table artefacts (e.g. adapters)."""
        p = self.tmp / relpath
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def commit(self, manifest: dict, *, merge_scores: bool = True) -> Path:
        """Write the manifest and rename the run into place. ``merge_scores``: first merge each method's score
        shards at a checkpoint into one file sorted by test prompt (:func:`engine.runfolder.score_layout.merge_score_shards`);
        False keeps the shards as written (the layout of run folders written before the merge)."""
        if merge_scores:
            self.files = merge_score_shards(self.tmp, self.files)
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
def open_run(runs_dir: Path, name: str, owner_pid: int | None = None) -> Iterator[RunWriter]:
    """Context manager yielding a :class:`RunWriter`; unless it was committed, the temp folder is removed.

    ``owner_pid``: another process's pid (torchrun rank 0's, on the other ranks): join the temp folder that
    process creates, writing files into it but neither creating, removing nor committing it.
    """
    check_run_name(name)
    runs_dir = Path(runs_dir)
    if owner_pid is not None and owner_pid != os.getpid():
        yield RunWriter(runs_dir / f".{name}{TMP_TAG}{owner_pid}", runs_dir / name)
        return
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
            if tag == OLD_TAG and not final.exists() and checked_manifest(p) is not None:
                os.replace(p, final)
            else:
                shutil.rmtree(p, ignore_errors=True)
