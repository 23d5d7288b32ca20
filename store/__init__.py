"""The score store: the only package with SQL. DuckDB schema, ingest of run folders, query functions.

Public API (imported lazily, so ``import engine.paths`` from the engine does not import duckdb)::

    Store, open_store, open_or_rebuild                      (store.db)
    ingest_run, ingest_all, remove_run, rebuild, complete_runs   (store.ingest)
    list_runs, run_info, methods, checkpoints, leaderboard, top_k, samples, label_metrics, agreement,
    test_agreement, train_loss, score_row, score_matrix, top1_counts, topk_counts, test_prompts_ranking_train,
    per_test_hits, summary, analyses, analysis_table, retrain_points, retrain_noise, retrain_counterfactual_summary,
    behaviour_scores, group_influence, GROUP_COLUMNS, self_influence, self_influence_sets, checks, check_status
    (store.queries; pages never call score_matrix: it loads a whole matrix)
    default_store_path, default_runs_dir                    (engine.paths)
    StoreError, NotFoundError, Unknown*Error, QueryError, IngestError, RunFilesError, StoreLockedError,
    SchemaVersionError, StoreOpenError
"""

from __future__ import annotations

import importlib

from engine.paths import default_runs_dir, default_store_path  # noqa: F401
from store.errors import (  # noqa: F401  (no duckdb import in errors/paths)
    IngestError,
    NotFoundError,
    QueryError,
    RunFilesError,
    SchemaVersionError,
    StoreError,
    StoreLockedError,
    UnknownCheckpointError,
    UnknownMethodError,
    UnknownRunError,
    UnknownSampleError,
)

_LAZY = {
    "store.db": ("Store", "open_store", "open_or_rebuild", "rebuild", "StoreOpenError"),
    "store.ingest": ("ingest_run", "ingest_all", "remove_run", "complete_runs"),
    "store.queries": (
        "list_runs", "run_info", "methods", "checkpoints", "leaderboard", "top_k", "samples", "label_metrics",
        "agreement", "test_agreement", "train_loss", "score_row", "score_matrix", "top1_counts", "topk_counts",
        "test_prompts_ranking_train", "per_test_hits", "summary", "analyses", "analysis_table", "retrain_points",
        "retrain_noise", "retrain_counterfactual_summary", "behaviour_scores", "group_influence", "GROUP_COLUMNS",
        "self_influence", "self_influence_sets", "checks", "check_status",
    ),
    "store.schema": ("SCHEMA_VERSION",),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}

__all__ = [
    "IngestError", "NotFoundError", "QueryError", "RunFilesError", "SchemaVersionError", "StoreError", "StoreLockedError",
    "UnknownCheckpointError", "UnknownMethodError", "UnknownRunError", "UnknownSampleError",
    "default_runs_dir", "default_store_path", *_WHERE,
]


def __getattr__(name: str):
    """Import the submodule that defines ``name`` on first use (PEP 562)."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'store' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
