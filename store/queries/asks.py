"""Saved queries of the Ask page: a new prompt (or candidate training text) asked of a run, with its ranked answer.

Why they are here: the page's URL (``?q=<id>``) reopens a query without asking the query server again, and a
run's past queries are listed beside it. They are the one thing in the database that is not a copy of a run
folder, so :func:`store.db.rebuild` carries them over from the old file (:func:`copy_saved_queries`); they are
lost only when the old file cannot be read at all (a corrupt file). Ingesting or removing a run leaves them alone.

Rows: ``asks`` (one per query: run, kind, texts, generated flag, methods, k, seconds, created) and ``ask_results``
(method, rank, sample id, score). For kind ``prompt`` the ids are training samples, for ``candidate`` test
prompts. Every user value goes in as a query parameter. Writers pass a cursor of their own thread (the save runs
in one transaction on it).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from store.errors import NotFoundError, QueryError
from store.queries.common import connection, fetch_df, from_json, plain, positive, require_run
from store.schema import ASK_TABLES

log = logging.getLogger(__name__)

KINDS = ("prompt", "candidate")  # the two directions of engine.catalog.methods.QUERY_KINDS
LIST_LIMIT = 50  # past queries listed per run by default

_ASK_COLUMNS = ("ask_id, run_id, kind, prompt, response, generated, methods_json, k, seconds, cannot_json, "
                "notes_json, created")


class UnknownQueryError(NotFoundError):
    def __init__(self, query_id):
        super().__init__(f"no saved query with id {query_id!r} (it may have been asked of another database)")
        self.query_id = query_id


def save_query(con, run: str, kind: str, prompt: str, response: str, *, generated: bool, k: int,
               top: dict[str, list], seconds: float | None = None, cannot: dict[str, str] | None = None,
               notes: list[str] | None = None) -> str:
    """Save one answered query and its ranked rows in one transaction; return its id (12 hex digits).

    ``top``: method -> ``[(id, score), ...]`` best first, as the query server answers (its key order is the
    methods' order when reopened); ``cannot``: method -> why it cannot answer; ``notes``: what the user was told.
    ``con``: a cursor (or connection) that no other thread uses."""
    require_run(con, run)
    if kind not in KINDS:
        raise QueryError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not isinstance(prompt, str) or not prompt.strip():
        raise QueryError("prompt must be non-empty text")
    k = positive(k, "k")
    methods, ranks, ids, scores = _result_rows(top)
    query_id = secrets.token_hex(6)
    created = datetime.now(timezone.utc).replace(tzinfo=None)
    c = connection(con)
    c.execute("BEGIN TRANSACTION")
    try:
        c.execute(f"INSERT INTO asks ({_ASK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  [query_id, run, kind, prompt, response or "", bool(generated), json.dumps(list(top)), k,
                   None if seconds is None else float(seconds), json.dumps(cannot or {}), json.dumps(notes or []),
                   created])
        if methods:  # the lists are zipped by unnest: one row per (method, rank)
            c.execute("INSERT INTO ask_results SELECT $id, unnest($methods), unnest($ranks), unnest($ids), "
                      "unnest($scores)",
                      {"id": query_id, "methods": methods, "ranks": ranks, "ids": ids, "scores": scores})
        c.execute("COMMIT")
    except BaseException:
        c.execute("ROLLBACK")
        raise
    return query_id


def _result_rows(top: dict[str, list]) -> tuple[list[str], list[int], list[int], list[float | None]]:
    """``top`` as four parallel lists (method, rank, id, score); a QueryError naming the method for a bad row."""
    if not isinstance(top, dict):
        raise QueryError("top must map each method to its ranked (id, score) pairs")
    methods, ranks, ids, scores = [], [], [], []
    for method, ranked in top.items():
        for rank, pair in enumerate(ranked, start=1):
            try:
                i, s = pair
                i, s = int(i), float(s)
            except (TypeError, ValueError):
                raise QueryError(f"method {method!r}, rank {rank}: expected (id, score), got {pair!r}") from None
            methods.append(str(method))
            ranks.append(rank)
            ids.append(i)
            scores.append(None if np.isnan(s) else s)
    return methods, ranks, ids, scores


def saved_queries(con, run: str, limit: int = LIST_LIMIT) -> pd.DataFrame:
    """A run's saved queries, newest first: ask_id, kind, prompt, response, generated, methods (list), k, seconds,
    created. Empty for a run that has none (or that is not in the database)."""
    limit = positive(limit, "limit")
    df = fetch_df(con, "SELECT ask_id, kind, prompt, response, generated, methods_json, k, seconds, created "
                       "FROM asks WHERE run_id = ? ORDER BY created DESC, ask_id LIMIT ?", [run, limit])
    df["methods"] = [from_json(t, []) for t in df.pop("methods_json")]
    return df


def saved_query(con, query_id: str) -> dict:
    """One saved query, shaped like the query server's answer so that a page draws both the same way: ask_id,
    run, kind, prompt, response, generated, k, seconds (``{"total_s": ...}``), cannot, notes, created and top
    (method -> ``[[id, score], ...]`` best first). :class:`UnknownQueryError` for an id the database lacks."""
    if not isinstance(query_id, str):
        raise UnknownQueryError(query_id)
    head = fetch_df(con, f"SELECT {_ASK_COLUMNS} FROM asks WHERE ask_id = ?", [query_id])
    if head.empty:
        raise UnknownQueryError(query_id)
    row = {c: plain(v) for c, v in head.iloc[0].items()}
    rows = fetch_df(con, "SELECT method, rank, sample_id, score FROM ask_results WHERE ask_id = ? "
                         "ORDER BY method, rank", [query_id])
    top = {m: [] for m in from_json(row["methods_json"], [])}
    for r in rows.itertuples(index=False):
        top.setdefault(r.method, []).append([int(r.sample_id), float("nan") if pd.isna(r.score) else float(r.score)])
    return {"ask_id": row["ask_id"], "run": row["run_id"], "kind": row["kind"], "prompt": row["prompt"],
            "response": row["response"], "generated": bool(row["generated"]), "k": int(row["k"]),
            "seconds": {} if row["seconds"] is None else {"total_s": row["seconds"]},
            "cannot": from_json(row["cannot_json"], {}), "notes": from_json(row["notes_json"], []),
            "created": row["created"], "top": top}


def copy_saved_queries(old_path: str | os.PathLike, con) -> int:
    """Copy the saved queries of the database file ``old_path`` into ``con`` (a rebuild's new database); return how
    many. A file that cannot be opened (or whose saved queries do not fit this schema) gives 0 with a warning in
    the log, a file without saved queries 0: the rebuild goes on (its point is to recover from such files)."""
    old_path = Path(old_path)
    if not old_path.exists():
        return 0
    try:
        old = duckdb.connect(str(old_path), read_only=True)
    except duckdb.Error as e:
        log.warning("the saved queries of %s could not be read, the rebuilt database starts without them: %s",
                    old_path, e)
        return 0
    try:
        present = {r[0] for r in old.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if not set(ASK_TABLES) <= present:
            return 0
        tables = {t: old.execute(f"SELECT * FROM {t}").to_arrow_table()  # t: our constant table names
                  for t in ASK_TABLES}
    except duckdb.Error as e:
        log.warning("the saved queries of %s could not be read, the rebuilt database starts without them: %s",
                    old_path, e)
        return 0
    finally:
        old.close()
    c = connection(con)
    c.execute("BEGIN TRANSACTION")
    try:
        for t in ASK_TABLES:  # BY NAME: a column an older file lacks is NULL
            c.register("_saved_rows", tables[t])
            try:
                c.execute(f"INSERT INTO {t} BY NAME SELECT * FROM _saved_rows")
            finally:
                c.unregister("_saved_rows")
        c.execute("COMMIT")
    except duckdb.Error as e:  # e.g. a column this schema no longer has: none copied rather than half
        c.execute("ROLLBACK")
        log.warning("the saved queries of %s do not fit this schema, the rebuilt database starts without them: %s",
                    old_path, e)
        return 0
    return tables["asks"].num_rows


def answer_samples(con, run: str, kind: str, ids) -> pd.DataFrame:
    """The samples an answer ranks (training samples for kind ``prompt``, test prompts for ``candidate``), by id:
    sample_id, prompt, response, label. Reads only those rows, however large the run."""
    require_run(con, run)
    if kind not in KINDS:
        raise QueryError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    wanted = sorted({int(i) for i in ids})
    return fetch_df(con, "SELECT sample_id, prompt, response, label FROM samples WHERE run_id = ? AND split = ? "
                         "AND list_contains(CAST(? AS INTEGER[]), sample_id) ORDER BY sample_id",
                    [run, "train" if kind == "prompt" else "test", wanted])
