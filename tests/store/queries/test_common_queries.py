"""What every query shares (store.queries.common): names and arguments go in as parameters, unknown names raise
lookup errors that say what is known, and a Store object works as well as a connection."""

from __future__ import annotations

import pytest

from store.errors import (
    NotFoundError,
    UnknownCheckpointError,
    UnknownMethodError,
    UnknownRunError,
    UnknownSampleError,
)
from store.queries import agreement, metrics, runs, samples, scores


def test_injection_in_names_is_harmless(loaded_once):
    con, _ = loaded_once
    before = con.execute("SELECT count(*) FROM topk").fetchone()[0]
    evil = "tied' OR '1'='1"
    for call in (lambda: runs.run_info(con, evil), lambda: scores.top_k(con, evil, "gradsim", 1, 0, 3),
                 lambda: samples.samples(con, "x'; DROP TABLE samples; --"),
                 lambda: metrics.leaderboard(con, run=evil)):
        with pytest.raises(UnknownRunError):
            call()
    with pytest.raises(UnknownMethodError):
        scores.top_k(con, "tied", "gradsim' OR 1=1 --", 1, 0, 3)
    assert samples.samples(con, "tied", label="x' OR '1'='1").empty
    assert con.execute("SELECT count(*) FROM topk").fetchone()[0] == before
    assert len(runs.list_runs(con)) == 2


def test_unknown_names_raise_lookup_errors(loaded):
    con, _ = loaded
    with pytest.raises(LookupError, match="run 'nope'"):
        runs.methods(con, "nope")
    with pytest.raises(UnknownMethodError, match=r"method 'lissa'.*'tied'.*known methods: datainf, gradsim"):
        scores.top_k(con, "tied", "lissa", 1, 0, 3)
    with pytest.raises(UnknownCheckpointError, match="checkpoint 7.*known checkpoints: 1, 2"):
        scores.score_matrix(con, "tied", "gradsim", 7)
    with pytest.raises(UnknownSampleError, match="no test sample with id 99"):
        scores.top_k(con, "tied", "gradsim", 1, 99, 3)
    with pytest.raises(UnknownSampleError, match="no train sample"):
        scores.test_prompts_ranking_train(con, "tied", "gradsim", 1, 99, 3)
    with pytest.raises(NotFoundError):
        runs.checkpoints(con, "tied", "lissa")
    for fn in (agreement.agreement, runs.train_loss, runs.run_info):
        with pytest.raises(UnknownRunError):
            fn(con, "nope")


def test_queries_accept_store_object(store, runs_dir, make_run):
    make_run(runs_dir, "a")
    store.ingest_all(runs_dir)
    assert runs.methods(store, "a") == ["datainf", "gradsim"]
