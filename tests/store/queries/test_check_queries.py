"""store.queries.checks: a run's self-checks and the status of every run that has some."""

from store.queries import checks as q


def test_checks_and_status(loaded_extras):
    con, _, _ = loaded_extras
    rows = q.checks(con, "alpha")
    assert len(rows) == 2 and not rows.passed.iloc[0] and rows.kind.iloc[0] == "padding"
    status = q.check_status(con)
    assert status.to_dict("records") == [{"run_id": "alpha", "n_checks": 2, "n_failed": 1,
                                          "failed": "padding train 3"}]
    assert q.checks(con, "plain").empty
