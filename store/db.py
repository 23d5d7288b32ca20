"""Opening the database: :class:`Store`, lock-aware retries, and open-or-rebuild for app start-up.

DuckDB lets ONE process open a file read-write, and while it does no other process can open the file at all
(not even read-only). The app is that process; compute jobs never open the database, they write run folders.
A second process that must write (an admin CLI) uses :func:`open_store`, which retries briefly on the lock
error and then raises :class:`StoreLockedError` naming the file. Within one process, share one
:class:`Store` and give each thread its own ``store.cursor()`` (a DuckDB connection is not thread-safe).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import duckdb

from engine.paths import default_runs_dir, default_store_path, store_memory_limit, store_threads
from engine.runfolder.runformat import pid_alive
from store import ingest as _ingest
from store.errors import SchemaVersionError, StoreError, StoreLockedError
from store.queries import asks as _asks
from store.schema import TOP_K, check_schema, ensure_schema

log = logging.getLogger(__name__)


class StoreOpenError(StoreError):
    """The file exists but DuckDB cannot open it (corrupt, other DuckDB version, no permission)."""


class Store:
    """One DuckDB connection to the influence database, with the schema in place.

    ``Store(path, read_only=False)``; ``path`` defaults to :func:`engine.paths.default_store_path`,
    ``":memory:"`` gives a throw-away database. Read-write opens create the parent folder and the tables;
    read-only opens check the schema version. ``top_k``: training samples kept per test prompt by this store's
    ingests (default :data:`store.schema.TOP_K`). Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        read_only: bool = False,
        *,
        memory_limit: str | None = None,
        threads: int | None = None,
        top_k: int = TOP_K,
    ):
        self.path = Path(path) if path is not None else default_store_path()
        self.read_only = read_only
        self.top_k = top_k
        self._write_lock = threading.Lock()
        in_memory = str(path) == ":memory:"
        if not read_only and not in_memory:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        config = {"memory_limit": memory_limit or default_memory_limit(), "threads": threads or default_threads()}
        self.con = connect(":memory:" if in_memory else self.path, read_only=read_only, config=config)
        try:
            # Score files are read in place: cache their Parquet footers (DuckDB re-validates a cached footer
            # against the file, so a re-run that replaces a file is read afresh). GLOBAL: cursors share it.
            self.con.execute("SET GLOBAL parquet_metadata_cache = true")
            (check_schema if read_only else ensure_schema)(self.con, str(self.path))
        except BaseException:
            self.con.close()
            raise

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new cursor on the same database, for use by one thread."""
        return self.con.cursor()

    def ingest_run(self, folder: str | os.PathLike) -> bool:
        """:func:`store.ingest.ingest_run` (then ``CHECKPOINT``), serialised across threads."""
        with self._write_lock:
            return _ingest.ingest_run(self.con, folder, top_k=self.top_k)

    def ingest_all(self, runs_dir: str | os.PathLike | None = None, **kw) -> list[str]:
        """:func:`store.ingest.ingest_all` on ``runs_dir`` (default: :func:`default_runs_dir` of this file)."""
        runs_dir = runs_dir if runs_dir is not None else default_runs_dir(self.path)
        with self._write_lock:
            return _ingest.ingest_all(self.con, runs_dir, **{"top_k": self.top_k, **kw})

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, read_only={self.read_only})"


def connect(path: str | os.PathLike, read_only: bool = False, config: dict | None = None) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect`` with DuckDB's open errors turned into :class:`StoreLockedError`/:class:`StoreOpenError`."""
    try:
        return duckdb.connect(str(path), read_only=read_only, config=config or {})
    except duckdb.Error as e:
        raise _open_error(Path(path), e) from e


def probe_lock(path: str | os.PathLike) -> None:
    """Raise :class:`StoreLockedError` if another connection holds ``path``; ignore any other open error."""
    path = Path(path)
    if not path.exists():
        return
    try:
        duckdb.connect(str(path), read_only=True).close()
    except duckdb.Error as e:
        err = _open_error(path, e)
        if isinstance(err, StoreLockedError):
            raise err from e


def open_store(
    path: str | os.PathLike | None = None,
    read_only: bool = False,
    *,
    retries: int = 10,
    delay_s: float = 0.5,
    **store_kw,
) -> Store:
    """Open a :class:`Store`, retrying up to ``retries`` times (``delay_s`` apart, growing) while another
    process holds the file; then raise :class:`StoreLockedError` naming the file. For short-lived writers:
    open, do the work, close."""
    for attempt in range(retries + 1):
        try:
            return Store(path, read_only, **store_kw)
        except StoreLockedError as e:
            if attempt == retries:
                raise StoreLockedError(f"{e} (gave up after {retries + 1} attempts)") from e
            time.sleep(delay_s * (1 + attempt))
    raise AssertionError("unreachable")


def open_or_rebuild(
    path: str | os.PathLike | None = None, runs_dir: str | os.PathLike | None = None, **store_kw
) -> Store:
    """App start-up: open the store read-write, rebuilding it from the run folders when the file is corrupt
    or from another schema version, then ingest any new run folders (failures logged, not raised)."""
    path = Path(path) if path is not None else default_store_path()
    runs_dir = runs_dir if runs_dir is not None else default_runs_dir(path)
    try:
        store = Store(path, **store_kw)
    except (StoreOpenError, SchemaVersionError) as e:
        log.warning("rebuilding %s from %s: %s", path, runs_dir, e)
        rebuild(path, runs_dir, **store_kw)
        store = Store(path, **store_kw)
    try:
        store.ingest_all(runs_dir, strict=False)
    except BaseException:
        store.close()
        raise
    return store


def default_memory_limit() -> str:
    """``INFLUENCE_STORE_MEMORY``, else 30 % of the memory available to this process (cgroup-aware), >= 256 MB.

    DuckDB's own default (80 % of RAM) leaves too little for torch and Streamlit in the same container.
    """
    setting = store_memory_limit()
    if setting:
        return setting
    total = _available_memory()
    return f"{max(256, int(total * 0.3) // 2**20)}MB" if total else "2GB"


def default_threads() -> int:
    """``INFLUENCE_STORE_THREADS``, else the CPUs this process may use, at most 8."""
    setting = store_threads()
    if setting is not None:
        return setting
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def _available_memory() -> int | None:
    """Physical RAM, lowered by a cgroup (v2 or v1) memory limit if one is set."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = None
    for f in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(f).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and (total is None or int(text) < total):
            total = int(text)
    return total


def _open_error(path: Path, e: duckdb.Error) -> StoreError:
    msg = str(e)
    if "lock" in msg.lower():
        return StoreLockedError(
            f"database {path} is in use by another process ({msg}). DuckDB lets one process open a file "
            "read-write and then no other process can open it; close that process or try again later"
        )
    if isinstance(e, duckdb.ConnectionException):
        return StoreLockedError(
            f"database {path} is already open in this process with other settings ({msg}); close that Store first"
        )
    return StoreOpenError(
        f"cannot open database {path}: {msg}. If the file is corrupt or from another DuckDB version, recreate it "
        "from the run folders with store.rebuild(db_path, runs_dir)"
    )


# ---------------------------------------------------------------------------------------------- rebuild


def rebuild(
    db_path: str | os.PathLike, runs_dir: str | os.PathLike | None = None, *, strict: bool = False, **store_kw
) -> list[str]:
    """Recreate the database file at ``db_path`` from the run folders; return the runs ingested.

    The new database is written to a hidden temp file next to ``db_path`` and renamed over it only when
    complete, so a crash mid-rebuild leaves the old file untouched. Works when the old file is missing,
    corrupt or from another schema/DuckDB version. Refuses (:class:`StoreLockedError`) while another process
    holds the old file; close your own :class:`~store.db.Store` on it first. Runs that fail to load are
    skipped with a warning unless ``strict``. The saved queries of the Ask page, which no run folder holds, are
    copied from the old file when it can be read (:func:`store.queries.asks.copy_saved_queries`). ``store_kw`` go to :class:`~store.db.Store` (memory_limit, ...).
    """
    db_path = Path(db_path).resolve()
    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir(db_path)
    probe_lock(db_path)
    _remove_stale_rebuilds(db_path)
    tmp = db_path.with_name(f".{db_path.name}.rebuild-{os.getpid()}")
    _remove_db_files(tmp)
    try:
        with Store(tmp, **store_kw) as store:
            ingested = _ingest.ingest_all(store.con, runs_dir, strict=strict, top_k=store.top_k)
            kept = _asks.copy_saved_queries(db_path, store.con)  # the one thing not in the run folders
            store.con.execute("CHECKPOINT")
        _remove_db_files(db_path, keep_main=True)  # a stale WAL must never be replayed onto the new file
        os.replace(tmp, db_path)
    finally:
        _remove_db_files(tmp)
    log.info("rebuilt %s from %s: %d run(s), %d saved queries kept", db_path, runs_dir, len(ingested), kept)
    return ingested


def _remove_stale_rebuilds(db_path: Path) -> None:
    """Delete temp files left by rebuilds whose process died (``.<name>.rebuild-<pid>``)."""
    for p in db_path.parent.glob(f".{db_path.name}.rebuild-*"):
        pid = p.name.rsplit("-", 1)[-1].removesuffix(".wal")
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            p.unlink(missing_ok=True)


def _remove_db_files(path: Path, keep_main: bool = False) -> None:
    """Delete a database file's WAL (and the file itself unless ``keep_main``)."""
    for p in ([] if keep_main else [path]) + [path.with_name(path.name + ".wal")]:
        try:
            p.unlink()
        except FileNotFoundError:
            pass
