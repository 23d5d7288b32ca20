"""store.queries.samples: filters, and a search that matches its text literally."""

from __future__ import annotations

import pytest

from store.queries import samples as q


def test_samples_filters(loaded_once):
    con, runs = loaded_once
    d = runs["plain"]
    df = q.samples(con, "plain")
    assert len(df) == d.n_train + d.n_test and df["split"].iloc[0] == "train"
    assert len(q.samples(con, "plain", split="test")) == d.n_test
    assert len(q.samples(con, "plain", split="train", label="beta")) == int((d.train_labels == "beta").sum())
    assert len(q.samples(con, "plain", limit=3)) == 3
    assert len(q.samples(con, "plain", search="TEST PROMPT")) == d.n_test  # case-insensitive
    assert len(q.samples(con, "plain", search="answer 2")) == 1  # matches the response


@pytest.mark.parametrize("term, expected", [
    ("50%", ["50% off everything"]),
    ("%", ["50% off everything"]),
    ("snake_case", ["snake_case name"]),
    ("_", ["snake_case name"]),
    ("back\\slash", ["back\\slash"]),
    ("'; DROP TABLE scores; --", ["x'; DROP TABLE scores; -- said O'Brien"]),
    ("o'brien", ["x'; DROP TABLE scores; -- said O'Brien"]),
])
def test_search_is_literal(loaded_once, term, expected):
    con, _ = loaded_once
    df = q.samples(con, "tied", split="train", search=term)
    assert df["prompt"].tolist() == expected
    assert con.execute("SELECT count(*) FROM topk").fetchone()[0] > 0
