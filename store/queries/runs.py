"""The runs: the list of ingested runs, one run's details, its methods and checkpoints, its fine-tuning loss,
and the store's counts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from engine.runfolder.runformat import read_manifest
from store.queries.common import (
    checkpoint_numbers,
    connection,
    fetch_df,
    fetch_one,
    from_json,
    method_names,
    plain,
    require_method,
    require_run,
)


def list_runs(con) -> pd.DataFrame:
    """One row per ingested run, newest first: run_id, kind, model, task, status, created, n_train, n_test,
    k_default, labels (list), methods / checkpoints (comma-separated text), folder, ingested_at."""
    df = fetch_df(
        con,
        """
        SELECT r.run_id, r.kind, r.model, r.task, r.status, r.created, r.n_train, r.n_test, r.k_default,
               r.labels_json,
               (SELECT string_agg(DISTINCT s.method, ', ' ORDER BY s.method) FROM score_sets s
                 WHERE s.run_id = r.run_id) AS methods,
               (SELECT string_agg(DISTINCT CAST(s.checkpoint AS VARCHAR), ', ' ORDER BY CAST(s.checkpoint AS VARCHAR))
                  FROM score_sets s WHERE s.run_id = r.run_id) AS checkpoints,
               r.folder, r.ingested_at
        FROM runs r ORDER BY r.created DESC NULLS LAST, r.run_id
        """,
    )
    df.insert(9, "labels", [from_json(v, []) for v in df.pop("labels_json")])
    return df


def run_info(con, run: str) -> dict:
    """Everything known about one run: the ``runs`` columns with spec/labels/versions parsed from JSON, plus
    ``methods``, ``checkpoints``, ``n_scores`` and ``stored_k`` (the ranks per test prompt kept in ``topk``).
    Raises :class:`UnknownRunError`."""
    require_run(con, run)
    df = fetch_df(con, "SELECT * FROM runs WHERE run_id = ?", [run])
    info = {k: plain(v) for k, v in df.iloc[0].items()}
    for key in ("spec", "labels", "versions"):
        info[key] = from_json(info.pop(f"{key}_json"), None)
    info["methods"] = methods(con, run)
    info["checkpoints"] = checkpoints(con, run)
    info["n_scores"] = int(fetch_one(con, "SELECT coalesce(sum(n_rows), 0) FROM score_sets WHERE run_id = ?", [run]))
    # how many ranks per test prompt the topk table holds for every score set (None without scores)
    info["stored_k"] = fetch_one(con, "SELECT min(top_k) FROM score_sets WHERE run_id = ?", [run])
    return info


def run_fingerprint(con, run: str) -> dict | None:
    """The settings fingerprint of ``run`` (the manifest's ``fingerprint``: loss positions, precision, attention
    kernel, damping, projection, query; ``engine.pipeline.fingerprint``), read from its run folder; None for a run
    written before it, an imported run, or a folder that is gone."""
    require_run(con, run)
    folder = fetch_one(con, "SELECT folder FROM runs WHERE run_id = ?", [run])
    manifest = read_manifest(Path(folder)) if folder else None
    value = (manifest or {}).get("fingerprint")
    return value if isinstance(value, dict) else None


def unlabelled_runs(con) -> set[str]:
    """The runs whose samples carry no label (the user's data without a label column): their label metrics are
    NULL and the pages say "needs labels" in their place."""
    rows = fetch_df(con, "SELECT run_id FROM runs r WHERE NOT EXISTS (SELECT 1 FROM samples s WHERE "
                         "s.run_id = r.run_id AND s.label IS NOT NULL)")
    return set(rows.run_id)


def run_labelled(con, run: str) -> bool:
    """Whether ``run``'s samples carry labels (Acc@1, Coverage@k, AUPRC and the label views need them)."""
    require_run(con, run)
    sql = "SELECT count(*) FROM samples WHERE run_id = ? AND label IS NOT NULL"
    return bool(fetch_one(con, sql, [run]))


def methods(con, run: str) -> list[str]:
    """Methods that have scores in ``run``, sorted."""
    require_run(con, run)
    return method_names(con, run)


def checkpoints(con, run: str, method: str | None = None) -> list[int]:
    """Checkpoints (epochs; 0 = imported) that have scores in ``run`` (for ``method`` if given), sorted."""
    require_run(con, run)
    if method is not None:
        require_method(con, run, method)
    return checkpoint_numbers(con, run, method)


def summary(con) -> dict:
    """Counts for the home page: runs, samples, scores, methods, score_sets, last_ingested."""
    c = connection(con)
    runs, last = c.execute("SELECT count(*), max(ingested_at) FROM runs").fetchone()
    n_scores, n_methods, n_sets = c.execute(
        "SELECT coalesce(sum(n_rows), 0), count(DISTINCT method), count(*) FROM score_sets"
    ).fetchone()
    n_samples = c.execute("SELECT count(*) FROM samples").fetchone()[0]
    return {
        "runs": int(runs), "samples": int(n_samples), "scores": int(n_scores), "methods": int(n_methods),
        "score_sets": int(n_sets), "last_ingested": last,
    }


def train_loss(con, run: str) -> pd.DataFrame:
    """The fine-tuning loss curve of ``run`` (the Convergence page draws it): epoch, step, loss, by step (empty for
    imported runs)."""
    require_run(con, run)
    return fetch_df(con, "SELECT epoch, step, loss FROM train_loss WHERE run_id = ? ORDER BY step, epoch", [run])
