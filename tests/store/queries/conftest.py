"""Fixtures for the query tests: ingested synthetic runs (see ``tests/store/conftest.py`` for ``make_run``)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.runfolder.runformat import table
from store.db import Store
from store.schema import TOP_K


@pytest.fixture(params=[3, TOP_K], ids=["topk3", f"topk{TOP_K}"])
def store_k(request, db_path):
    """A store keeping the top 3 (most k below are then answered in place from the score files) or the default
    top k (every k of these small runs is then answered from the topk table)."""
    with Store(db_path, top_k=request.param) as s:
        yield s


@pytest.fixture
def loaded(store_k, runs_dir, make_run):
    """Two ingested runs; ``tied`` has many tied scores. Returns (con, {name: RunData}). For the tests of
    rankings: run once with each stored top k."""
    return _load(store_k, runs_dir, make_run)


@pytest.fixture
def loaded_once(store, runs_dir, make_run):
    """:func:`loaded` with the default top k only, for the tests that do not rank."""
    return _load(store, runs_dir, make_run)


def _load(store, runs_dir, make_run):
    prompts = {0: "50% off everything", 1: "500 offers", 2: "snake_case name", 3: "snakeXcase name",
               4: "back\\slash", 5: "x'; DROP TABLE scores; -- said O'Brien"}
    runs = {
        "tied": make_run(runs_dir, "tied", n_train=15, n_test=6, seed=3, ties=True, train_prompts=prompts),
        "plain": make_run(runs_dir, "plain", n_train=11, n_test=4, methods=("gradsim", "repsim"), seed=4),
    }
    store.ingest_all(runs_dir)
    return store.con, runs


def _extra(n_train: int) -> dict:
    rng = np.random.default_rng(5)
    si = [{"method": "gradsim", "checkpoint": 2, "train_id": i, "score": float(v)}
          for i, v in enumerate(np.round(rng.normal(size=n_train), 1))]  # rounded: ties
    checks = [
        {"kind": "padding", "subject": "train 3", "checkpoint": 2, "metric": "cosine", "value": 0.5, "op": ">=",
         "threshold": 0.9999, "passed": False, "note": ""},
        {"kind": "finite", "subject": "gradsim", "checkpoint": 2, "metric": "finite_share", "value": 1.0,
         "op": ">=", "threshold": 1.0, "passed": True, "note": ""},
    ]
    return {"self_influence.parquet": table("self_influence", si), "checks.parquet": table("checks", checks)}


@pytest.fixture
def loaded_extras(store, runs_dir, make_run):
    """Run ``alpha`` with self-influence and self-checks (and a few NaN scores), and run ``plain`` written before
    those tables (none of them). Returns (con, alpha's RunData, plain's RunData)."""
    d = make_run(runs_dir, "alpha", n_train=20, n_test=9, nans=0.03, seed=2, extra_files=_extra(20))
    plain = make_run(runs_dir, "plain", n_train=6, n_test=3, seed=4)  # written before these tables: none of them
    store.ingest_all(runs_dir)
    return store.con, d, plain


def _order(v: np.ndarray) -> np.ndarray:
    """Ranking rule: score descending, NaN last, ties -> lower id first."""
    key = np.where(np.isnan(v), -np.inf, v)
    return np.array(sorted(range(len(v)), key=lambda i: (np.isnan(v[i]), -key[i], i)))


@pytest.fixture
def order():
    """``order(v)``: the ids of a score vector in ranking order (score descending, NaN last, ties -> lower id)."""
    return _order
