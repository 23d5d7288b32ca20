"""store.queries.agreement: the method-pair agreement rows (per test sample: tests/store/queries/test_in_place.py)."""

from __future__ import annotations

from store.queries import agreement as q


def test_agreement(loaded_once):
    con, _ = loaded_once
    ag = q.agreement(con, "tied")
    assert len(ag) == 2 and ag["spearman"].between(-1, 1).all()
    assert len(q.agreement(con, "tied", checkpoint=1)) == 1
