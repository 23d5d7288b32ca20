"""Read-only queries for the app, one module per topic (the pages share them; import them from ``store``)::

    runs            list_runs, run_info, methods, checkpoints, summary, train_loss
    metrics         leaderboard, per_test_hits
    scores          top_k, score_row, score_matrix, top1_counts, topk_counts, test_prompts_ranking_train
    agreement       agreement, test_agreement
    samples         samples, escape_like
    analyses        ANALYSIS_STAGES, analyses, analysis_table, retrain_noise, retrain_counterfactual_summary,
                    retrain_points
    behaviour       GROUP_COLUMNS, behaviour_scores, group_influence
    self_influence  self_influence_sets, self_influence
    checks          checks, check_status
    asks            save_query, saved_queries, saved_query, answer_samples, copy_saved_queries: the Ask page's
                    saved queries (the one module that writes; kept, not rebuilt, by a rebuild)
    common          what they share: running SQL, checking names and arguments, score files read in place, the
                    ranking CTEs

Each query takes a connection (or a cursor, or a :class:`~store.db.Store`) and returns a pandas DataFrame or a
plain value. Every user value goes in as a query parameter.

Ranking convention (same as ``engine.evaluation.metrics``, one SQL key: :func:`store.schema.rank_key`): training
samples are ranked by score descending, ties broken by the lowest ``train_id``; NaN scores rank last. Unknown runs,
methods, checkpoints or samples raise a subclass of :class:`LookupError` (:class:`~store.errors.NotFoundError`)
whose message names what was asked for; a bad argument (k that is not a positive integer, an unknown analysis
table) raises :class:`~store.errors.QueryError`. Both are :class:`~store.errors.StoreError`, which the CLI and the
pages show as a message.
"""
