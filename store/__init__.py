"""The score store: the only package with SQL. DuckDB schema, ingest of run folders, query functions.

Public API (import it from here: ``store.top_k(...)``); where each part lives::

    Store, open_store, open_or_rebuild, rebuild, StoreOpenError      store.db
    ingest_run, ingest_all, remove_run, complete_runs                store.ingest
    SCHEMA_VERSION (and rank_key, the one ranking key in SQL)        store.schema
    list_runs, run_info, methods, checkpoints, summary, train_loss,  store.queries.runs
    run_labelled, unlabelled_runs, run_fingerprint
    leaderboard, per_test_hits                                       store.queries.metrics
    top_k, score_row, score_matrix, top1_counts, topk_counts,        store.queries.scores
    test_prompts_ranking_train                                       (pages never call score_matrix: it loads a
                                                                     whole matrix)
    agreement, test_agreement                                        store.queries.agreement
    samples                                                          store.queries.samples
    analyses, analysis_table, retrain_points, retrain_noise,         store.queries.analyses
    retrain_counterfactual_summary
    behaviour_scores, group_influence, GROUP_COLUMNS                 store.queries.behaviour
    self_influence, self_influence_sets                              store.queries.self_influence
    checks, check_status                                             store.queries.checks
    save_query, saved_queries, saved_query, answer_samples,          store.queries.asks (the Ask page's saved
    UnknownQueryError                                                queries)
    StoreError, NotFoundError, Unknown*Error, QueryError,            store.errors
    IngestError, RunFilesError, StoreLockedError, SchemaVersionError

Importing ``store`` imports duckdb and pandas; the engine never imports it (it writes run folders). Where the
store file and the run folders are: ``engine.paths``.
"""

from __future__ import annotations

from store.db import Store, StoreOpenError, open_or_rebuild, open_store, rebuild
from store.errors import (
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
from store.ingest import complete_runs, ingest_all, ingest_run, remove_run
from store.queries.agreement import agreement, test_agreement
from store.queries.analyses import (
    analyses,
    analysis_table,
    retrain_counterfactual_summary,
    retrain_noise,
    retrain_points,
)
from store.queries.asks import UnknownQueryError, answer_samples, save_query, saved_queries, saved_query
from store.queries.behaviour import GROUP_COLUMNS, behaviour_scores, group_influence
from store.queries.checks import check_status, checks
from store.queries.metrics import leaderboard, per_test_hits
from store.queries.runs import (
    checkpoints,
    list_runs,
    methods,
    run_fingerprint,
    run_info,
    run_labelled,
    summary,
    train_loss,
    unlabelled_runs,
)
from store.queries.samples import samples
from store.queries.scores import (
    score_matrix,
    score_row,
    test_prompts_ranking_train,
    top1_counts,
    top_k,
    topk_counts,
)
from store.queries.self_influence import self_influence, self_influence_sets
from store.schema import SCHEMA_VERSION

__all__ = [
    # store.db
    "Store", "StoreOpenError", "open_or_rebuild", "open_store", "rebuild",
    # store.ingest
    "complete_runs", "ingest_all", "ingest_run", "remove_run",
    # store.schema
    "SCHEMA_VERSION",
    # store.queries.*
    "list_runs", "run_info", "methods", "checkpoints", "summary", "train_loss", "run_labelled", "unlabelled_runs",
    "run_fingerprint",
    "leaderboard", "per_test_hits",
    "top_k", "score_row", "score_matrix", "top1_counts", "topk_counts", "test_prompts_ranking_train",
    "agreement", "test_agreement",
    "samples",
    "analyses", "analysis_table", "retrain_points", "retrain_noise", "retrain_counterfactual_summary",
    "behaviour_scores", "group_influence", "GROUP_COLUMNS",
    "self_influence", "self_influence_sets",
    "checks", "check_status",
    "save_query", "saved_queries", "saved_query", "answer_samples", "UnknownQueryError",
    # store.errors
    "IngestError", "NotFoundError", "QueryError", "RunFilesError", "SchemaVersionError", "StoreError",
    "StoreLockedError", "UnknownCheckpointError", "UnknownMethodError", "UnknownRunError", "UnknownSampleError",
]
