"""Ingest run folders (format: ``engine.runfolder.runformat``) into the database (rebuilding the whole file from
them: :func:`store.db.rebuild`).

Policy for folders that are not complete runs (hidden temp folder of a killed run, no manifest, ``status`` not
``complete``, a file whose row count differs from the manifest): :func:`ingest_run` returns ``False`` and
writes nothing (it logs why at INFO level). It never raises for them, because a run that is still being
written or was killed is a normal sight in the runs directory, not an error. A complete folder whose data
cannot be loaded (corrupt Parquet, missing columns, sample counts that disagree with the manifest) raises
:class:`~store.errors.IngestError` naming the run and file; nothing of that run is visible afterwards.

Each run is loaded in ONE transaction: delete the run's old rows (re-run), bulk ``INSERT ... SELECT FROM
read_parquet(?)`` for every table but ``scores``, then the ``runs`` row carrying the manifest's sha256, which is
what makes a second ingest of the same folder a no-op. The score files are not copied: ingest checks them (types,
no NULL keys), records which file holds which (method, checkpoint) in ``score_files``, and computes ``topk`` (the
best ``top_k`` training samples per test prompt) from them; queries read the rest in place.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from engine.runfolder.runformat import MANIFEST, read_manifest, table_of_file
from store.errors import IngestError, QueryError
from store.schema import FILE_TABLES, OPTIONAL_COLUMNS, RUN_TABLES, TOP_K, rank_key

log = logging.getLogger(__name__)

_ATTEMPTS = 3  # re-tries when the folder is replaced by a re-run while we read it


class _FolderChanged(Exception):
    """The manifest changed while ingesting (a re-run replaced the folder): start again."""


class _LoadFailed(Exception):
    def __init__(self, table: str, paths: list[str], error: Exception):
        super().__init__(str(error))
        self.table, self.paths, self.error = table, paths, error


# ---------------------------------------------------------------------------------------------- public API


def ingest_run(con: duckdb.DuckDBPyConnection, folder: str | os.PathLike, *, checkpoint: bool = True,
               top_k: int = TOP_K) -> bool:
    """Ingest one run folder; return True if rows were written, False if there was nothing to do.

    Nothing to do = the folder is not a complete run (see module docstring), or the run is already ingested
    with the same manifest sha256. A changed manifest (the run was re-run) replaces all the run's rows.
    Raises :class:`IngestError` (naming the file) if a complete folder cannot be loaded; then nothing of that
    run changed. ``checkpoint``: run ``CHECKPOINT`` afterwards so the data is in the main file, not the WAL.
    ``top_k``: training samples kept per test prompt in ``topk`` (a run ingested earlier with another value is
    kept as it is until its folder changes; :func:`store.db.rebuild` applies a new value everywhere).
    """
    top_k = _top_k(top_k)
    folder = Path(folder).resolve()
    for _ in range(_ATTEMPTS):
        manifest = _read_manifest(folder)
        if manifest is None:
            log.info("not ingesting %s: not a complete run folder", folder)
            return False
        sha = _manifest_sha(folder)
        if sha is None or _stored_sha(con, folder.name) == sha:
            return False
        try:
            _load_run(con, folder, manifest, sha, top_k)
        except (_FolderChanged, IngestError) as e:
            # A re-run replaced the folder while we read it: what failed was a mix of two runs (e.g. sample
            # counts that disagree with the manifest we started from), not a bad folder. Start again.
            if isinstance(e, IngestError) and _manifest_sha(folder) == sha:
                raise
            log.info("run folder %s changed while ingesting; starting again", folder)
            continue
        if checkpoint:
            con.execute("CHECKPOINT")
        log.info("ingested run %s from %s", folder.name, folder)
        return True
    raise IngestError(f"run {folder.name!r}: folder {folder} kept changing while being ingested; try again later")


def ingest_all(
    con: duckdb.DuckDBPyConnection, runs_dir: str | os.PathLike, *, strict: bool = True, prune: bool = False,
    top_k: int = TOP_K,
) -> list[str]:
    """Ingest every complete run folder in ``runs_dir``; return the names of the runs that were (re)loaded.

    Every run is tried (each in its own transaction). Failures: with ``strict`` an :class:`IngestError` is
    raised at the end listing them (``.failures``; ``.ingested`` holds the runs that did go in); without it
    they are logged as warnings and skipped. ``prune``: also remove runs whose folder was in ``runs_dir`` but is
    no longer a complete run there.
    """
    runs_dir = Path(runs_dir).resolve()
    folders = complete_runs(runs_dir)
    ingested, failures = [], {}
    for folder in folders:
        try:
            if ingest_run(con, folder, checkpoint=False, top_k=top_k):
                ingested.append(folder.name)
        except IngestError as e:
            failures[folder.name] = str(e)
            log.warning("%s", e)
    removed = _prune(con, runs_dir, {f.name for f in folders}) if prune else []
    if ingested or removed:
        con.execute("CHECKPOINT")
    if failures and strict:
        lines = "\n".join(f"  {name}: {why}" for name, why in failures.items())
        raise IngestError(f"{len(failures)} run(s) in {runs_dir} could not be ingested:\n{lines}", failures, ingested)
    return ingested


def remove_run(con: duckdb.DuckDBPyConnection, run_id: str) -> bool:
    """Delete every row of ``run_id`` (one transaction); return whether the run was there."""
    present = con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]).fetchone()[0] > 0
    _in_transaction(con, lambda: _delete_run(con, run_id))
    return present


def complete_runs(runs_dir: str | os.PathLike) -> list[Path]:
    """Complete run folders in ``runs_dir``, sorted by name (like ``engine.runfolder.runformat.list_complete_runs``,
    but a folder whose check itself fails, e.g. on a truncated Parquet footer, counts as incomplete)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return sorted(p for p in runs_dir.iterdir() if p.is_dir() and _read_manifest(p) is not None)


# ---------------------------------------------------------------------------------------------- loading


def _read_manifest(folder: Path) -> dict | None:
    """``read_manifest``, treating any error while checking the folder as "not a complete run"."""
    try:
        return read_manifest(folder)
    except Exception as e:  # noqa: BLE001 - e.g. pyarrow.ArrowInvalid on a truncated file
        log.info("not a complete run folder: %s (%s: %s)", folder, type(e).__name__, e)
        return None


def _load_run(con: duckdb.DuckDBPyConnection, folder: Path, manifest: dict, sha: str, top_k: int) -> None:
    """Replace the run's rows in one transaction; on any error roll back and raise IngestError."""
    run_id = folder.name
    files = _table_files(folder, manifest)
    _check_columns(run_id, files)
    con.execute("BEGIN TRANSACTION")
    try:
        _delete_run(con, run_id)
        for table, paths in files.items():
            _insert_table(con, run_id, table, paths)
        _insert_score_sets(con, run_id, top_k)
        _insert_topk(con, run_id, top_k)
        _check_sample_counts(con, run_id, manifest, folder)
        if _manifest_sha(folder) != sha:
            raise _FolderChanged
        _insert_run_row(con, folder, manifest, sha)
        con.execute("COMMIT")
    except BaseException as e:
        con.execute("ROLLBACK")
        if isinstance(e, _LoadFailed):
            if _manifest_sha(folder) != sha:
                raise _FolderChanged from e
            raise _load_error(con, run_id, folder, e) from e.error
        if isinstance(e, duckdb.Error):
            raise IngestError(f"run {run_id!r} ({folder}): {e}") from e
        raise


def _table_files(folder: Path, manifest: dict) -> dict[str, list[str]]:
    """Map table -> Parquet paths listed in the manifest (``scores/*.parquet`` may be many files)."""
    out: dict[str, list[str]] = {}
    for rel in sorted(manifest.get("files", {})):
        table = table_of_file(rel)
        if table is not None:
            out.setdefault(table, []).append(str(folder / rel))
    if "samples" not in out:
        raise IngestError(f"run {folder.name!r}: manifest of {folder} lists no samples.parquet")
    return out


def _check_columns(run_id: str, files: dict[str, list[str]]) -> None:
    """Every file has the columns its table needs (reads Parquet footers only)."""
    for table, paths in files.items():
        needed = [c for c in FILE_TABLES[table][0] if c not in OPTIONAL_COLUMNS[table]]
        for path in paths:
            try:
                names = set(pq.read_schema(path).names)
            except Exception as e:  # noqa: BLE001 - any reader error means "unreadable file"
                raise IngestError(f"run {run_id!r}: cannot read {path}: {e}") from e
            missing = [c for c in needed if c not in names]
            if missing:
                raise IngestError(f"run {run_id!r}: {path} lacks column(s) {', '.join(missing)} needed for {table}")


def _select_list(table: str, present: set[str] | None = None) -> str:
    """``CAST(col AS type) AS col, ...`` for a table's Parquet columns (identifiers are our constants); an optional
    column the files lack (``present``) is NULL."""
    return ", ".join(f"CAST({c if present is None or c in present else 'NULL'} AS {t}) AS {c}"
                     for c, t in FILE_TABLES[table][0].items())


def _insert_table(con: duckdb.DuckDBPyConnection, run_id: str, table: str, paths: list[str]) -> None:
    """Bulk-load ``paths`` into ``table``, sorted by the table's key; for ``scores``, check the files and record
    them in ``score_files`` instead (their rows stay in the run folder)."""
    columns, order = FILE_TABLES[table]
    present = None
    if OPTIONAL_COLUMNS[table]:  # every file of such a table is written by one writer: the first one tells
        present = set(pq.read_schema(paths[0]).names)
    try:
        if table == "scores":
            _register_score_files(con, run_id, paths)
            return
        con.execute(f"INSERT INTO {table} (run_id, {', '.join(columns)}) "
                    f"SELECT CAST(? AS VARCHAR), {_select_list(table, present)} "
                    f"FROM read_parquet(?) ORDER BY {', '.join(order)}", [run_id, paths])
    except duckdb.Error as e:
        raise _LoadFailed(table, paths, e) from e


def _register_score_files(con: duckdb.DuckDBPyConnection, run_id: str, paths: list[str]) -> None:
    """One pass over the score files: every value casts to its declared type and no key is NULL (else the load
    fails, naming the file); then one ``score_files`` row per (file, method, checkpoint) with its row count."""
    key = FILE_TABLES["scores"][1]
    rows = con.execute(
        f"""SELECT filename, method, checkpoint, count(*), count(*) FILTER (WHERE {' OR '.join(f'{c} IS NULL'
                                                                                          for c in key)}),
                   count(score)  -- keeps the score cast from being optimised away: every value must cast
            FROM (SELECT {_select_list("scores")}, filename FROM read_parquet(?, filename = true))
            GROUP BY ALL""", [paths]).fetchall()
    bad = sorted({r[0] for r in rows if r[4]})
    if bad:
        raise duckdb.ConstraintException(f"NULL in a key column ({', '.join(key)}) of {', '.join(bad)}")
    con.executemany("INSERT INTO score_files VALUES (?, ?, ?, ?, ?)", [[run_id, m, c, f, n] for f, m, c, n, _, _ in rows])


def _insert_score_sets(con: duckdb.DuckDBPyConnection, run_id: str, top_k: int) -> None:
    con.execute(
        "INSERT INTO score_sets SELECT run_id, method, checkpoint, sum(n_rows), ? "
        "FROM score_files WHERE run_id = ? GROUP BY run_id, method, checkpoint",
        [top_k, run_id],
    )


def _insert_topk(con: duckdb.DuckDBPyConnection, run_id: str, top_k: int) -> None:
    """``topk`` of every (method, checkpoint) of the run, from its score files: per test prompt the ``top_k``
    best training samples by the one ranking key (``max_by`` with n keeps a bounded heap per prompt: memory
    n_test x top_k, not the matrix), loaded sorted by (test_id, rank)."""
    sets = con.execute("SELECT method, checkpoint, list(path ORDER BY path) FROM score_files WHERE run_id = ? "
                       "GROUP BY method, checkpoint ORDER BY method, checkpoint", [run_id]).fetchall()
    for method, ckpt, files in sets:
        con.execute(
            f"""INSERT INTO topk
                WITH rows AS (SELECT {_select_list("scores")} FROM read_parquet($files)
                              WHERE method = $method AND checkpoint = $ckpt),
                tops AS (SELECT test_id, max_by({{'train_id': train_id, 'score': score}}, {rank_key()}, $k) AS top
                         FROM rows GROUP BY test_id),
                ranked AS (SELECT test_id, unnest(top) AS t, generate_subscripts(top, 1) AS rnk FROM tops)
                SELECT $run, $method, $ckpt, test_id, rnk, t.train_id, t.score FROM ranked ORDER BY test_id, rnk""",
            {"files": files, "method": method, "ckpt": ckpt, "k": top_k, "run": run_id})


def _top_k(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise QueryError(f"top_k must be a positive integer, got {value!r}")
    return value


def _check_sample_counts(con: duckdb.DuckDBPyConnection, run_id: str, manifest: dict, folder: Path) -> None:
    """samples.parquet must hold n_train train and n_test test rows, as the manifest says, with the ids 0..n-1 of
    each split once each (the format's rule, which the queries build on)."""
    rows = {split: (n, distinct, lo, hi) for split, n, distinct, lo, hi in con.execute(
        "SELECT split, count(*), count(DISTINCT sample_id), min(sample_id), max(sample_id) FROM samples "
        "WHERE run_id = ? GROUP BY split", [run_id]).fetchall()}
    for split in ("train", "test"):
        n, distinct, lo, hi = rows.get(split, (0, 0, None, None))
        want = manifest.get(f"n_{split}")
        if want is not None and n != int(want):
            raise IngestError(
                f"run {run_id!r}: {folder / 'samples.parquet'} has {n} {split} rows, "
                f"manifest says n_{split} = {want}"
            )
        if n and not (distinct == n and lo == 0 and hi == n - 1):
            raise IngestError(f"run {run_id!r}: the {split} sample ids of {folder / 'samples.parquet'} are not "
                              f"0..{n - 1}, each once (found {distinct} distinct ids from {lo} to {hi})")


def _insert_run_row(con: duckdb.DuckDBPyConnection, folder: Path, manifest: dict, sha: str) -> None:
    labels = list(manifest.get("labels") or [])
    n_train = manifest.get("n_train")
    k_default = manifest.get("k_default") or max(1, int(n_train or 0) // max(1, len(labels)))
    now = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
    values = [
        folder.name, manifest.get("kind"), manifest.get("model"), manifest.get("task"),
        _json(manifest.get("spec")), manifest.get("spec_hash"), manifest.get("status"),
        _utc(manifest.get("created")), n_train, manifest.get("n_test"), _json(labels), int(k_default),
        _json(manifest.get("versions")), str(folder), sha, now,
    ]
    con.execute(f"INSERT INTO runs VALUES ({', '.join('?' * len(values))})", values)


def _load_error(con: duckdb.DuckDBPyConnection, run_id: str, folder: Path, e: _LoadFailed) -> IngestError:
    """Name the file that failed: probe each file of the failed table on its own (after the rollback)."""
    columns, key = FILE_TABLES[e.table]
    casts = ", ".join(f"count(CAST({c} AS {t}))" for c, t in columns.items() if c not in OPTIONAL_COLUMNS[e.table])
    null_keys = " OR ".join(f"{c} IS NULL" for c in key)
    culprit = e.paths[0] if len(e.paths) == 1 else None
    for path in e.paths if culprit is None else []:
        try:  # every value must cast, and key columns must not be NULL
            row = con.execute(f"SELECT count(*) FILTER (WHERE {null_keys}), {casts} FROM read_parquet(?)", [[path]])
            if row.fetchone()[0]:
                culprit = path
        except duckdb.Error:
            culprit = path
        if culprit:
            break
    where = culprit or f"one of {len(e.paths)} {e.table} files in {folder}"
    return IngestError(f"run {run_id!r}: cannot load {where} into {e.table}: {e.error}")


# ---------------------------------------------------------------------------------------------- helpers


def _delete_run(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    for table in RUN_TABLES:
        con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])


def _in_transaction(con: duckdb.DuckDBPyConnection, fn) -> None:
    con.execute("BEGIN TRANSACTION")
    try:
        fn()
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _prune(con: duckdb.DuckDBPyConnection, runs_dir: Path, present: set[str]) -> list[str]:
    """Remove runs whose folder lived in ``runs_dir`` but is no longer a complete run there."""
    rows = con.execute("SELECT run_id, folder FROM runs").fetchall()
    gone = [r for r, f in rows if Path(f).parent == runs_dir and r not in present]
    for run_id in gone:
        remove_run(con, run_id)
        log.info("removed run %s: its folder is gone from %s", run_id, runs_dir)
    return gone


def _stored_sha(con: duckdb.DuckDBPyConnection, run_id: str) -> str | None:
    row = con.execute("SELECT manifest_sha256 FROM runs WHERE run_id = ?", [run_id]).fetchone()
    return None if row is None else row[0]


def _manifest_sha(folder: Path) -> str | None:
    try:
        return hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest()
    except OSError:
        return None


def _json(value) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def _utc(value) -> _dt.datetime | None:
    """ISO-8601 text -> naive UTC datetime (None if missing or unparsable)."""
    try:
        t = _dt.datetime.fromisoformat(str(value))
    except (TypeError, ValueError):
        return None
    return t.astimezone(_dt.timezone.utc).replace(tzinfo=None) if t.tzinfo else t


__all__ = ["ingest_run", "ingest_all", "remove_run", "complete_runs"]
