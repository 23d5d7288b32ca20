"""Errors raised by :mod:`store`. Each message names the run, method, file or database at fault."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error raised on purpose by :mod:`store`."""


class NotFoundError(StoreError, LookupError):
    """A run, method, checkpoint or sample that the database does not hold."""


class UnknownRunError(NotFoundError):
    def __init__(self, run: str):
        super().__init__(f"run {run!r} is not in the database (ingest its run folder first)")
        self.run = run


class UnknownMethodError(NotFoundError):
    def __init__(self, run: str, method: str, known: list[str]):
        super().__init__(f"method {method!r} has no scores in run {run!r}; known methods: {', '.join(known) or 'none'}")
        self.run, self.method = run, method


class UnknownCheckpointError(NotFoundError):
    def __init__(self, run: str, method: str, checkpoint: int, known: list[int]):
        super().__init__(
            f"checkpoint {checkpoint!r} has no scores for method {method!r} in run {run!r}; "
            f"known checkpoints: {', '.join(map(str, known)) or 'none'}"
        )
        self.run, self.method, self.checkpoint = run, method, checkpoint


class UnknownSampleError(NotFoundError):
    def __init__(self, run: str, split: str, sample_id: int):
        super().__init__(f"run {run!r} has no {split} sample with id {sample_id!r}")


class QueryError(StoreError, ValueError):
    """A query argument that cannot be used (k not a positive integer, an unknown analysis table, an id that is not
    an integer); the message names the argument."""


class RunFilesError(StoreError):
    """A query that reads a run's score files in place (they are not copied into the database) found them missing
    or unreadable: the run folder was moved, deleted or damaged after it was ingested."""

    def __init__(self, run: str, what: str):
        super().__init__(
            f"run {run!r}: {what}. The store reads score matrices from the run folder: put the folder back, or "
            "rebuild the database from the run folders that exist (python -m engine rebuild-store)")
        self.run = run


class IngestError(StoreError):
    """A run folder could not be ingested; nothing of that run was written.

    ``failures`` maps run name -> reason; ``ingested`` lists the runs that did go in (for
    :func:`store.ingest.ingest_all`, which tries every run before raising).
    """

    def __init__(self, message: str, failures: dict[str, str] | None = None, ingested: list[str] | None = None):
        super().__init__(message)
        self.failures = failures or {}
        self.ingested = ingested or []


class StoreLockedError(StoreError):
    """Another process holds the database file (DuckDB allows one read-write process per file)."""


class SchemaVersionError(StoreError):
    """The database file was written by a different schema version; rebuild it from the run folders."""
