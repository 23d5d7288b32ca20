"""Behaviour queries, group views, self-influence and self-checks in SQL, against numpy loops over the raw
score matrices that the synthetic run folders were written from."""

import numpy as np
import pytest

import store.queries as q
from engine.runfolder.runformat import table
from store.errors import NotFoundError


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
def loaded(store, runs_dir, make_run):
    d = make_run(runs_dir, "alpha", n_train=20, n_test=9, nans=0.03, seed=2, extra_files=_extra(20))
    plain = make_run(runs_dir, "plain", n_train=6, n_test=3, seed=4)  # written before these tables: none of them
    store.ingest_all(runs_dir)
    return store.con, d, plain


def _order(v: np.ndarray) -> np.ndarray:
    """Ranking rule: score descending, NaN last, ties -> lower id first."""
    key = np.where(np.isnan(v), -np.inf, v)
    return np.array(sorted(range(len(v)), key=lambda i: (np.isnan(v[i]), -key[i], i)))


def test_behaviour_is_the_mean_of_the_query_rows(loaded):
    con, d, _ = loaded
    S = d.scores[("gradsim", 2)].astype(np.float64)
    query = [1, 4, 7]
    df = q.behaviour_scores(con, "alpha", "gradsim", 2, [7, 1, 4, 4])
    want = np.array([np.mean([S[j, i] for j in query]) for i in range(d.n_train)])
    got = df.sort_values("train_id").score.to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)
    assert df.train_id.tolist() == _order(want).tolist() and df["rank"].tolist() == list(range(1, d.n_train + 1))
    assert df.control_mean.isna().all() and (df.label.to_numpy() == d.train_labels[df.train_id]).all()


def test_contrast_is_query_minus_control(loaded):
    con, d, _ = loaded
    S = d.scores[("datainf", 1)].astype(np.float64)
    query, control = [0, 2], [3, 5, 8]
    df = q.behaviour_scores(con, "alpha", "datainf", 1, query, control).sort_values("train_id")
    for i, r in enumerate(df.itertuples()):
        qm = sum(S[j, i] for j in query) / len(query)
        cm = sum(S[j, i] for j in control) / len(control)
        assert r.query_mean == pytest.approx(qm, rel=1e-6, nan_ok=True)
        assert r.control_mean == pytest.approx(cm, rel=1e-6, nan_ok=True)
        assert r.score == pytest.approx(qm - cm, rel=1e-5, abs=1e-6, nan_ok=True)


def test_behaviour_groups_are_checked(loaded):
    con, _, _ = loaded
    with pytest.raises(ValueError, match="query group: choose at least one"):
        q.behaviour_scores(con, "alpha", "gradsim", 1, [])
    with pytest.raises(ValueError, match=r"control group: run 'alpha' has no test sample\(s\) \[99\]"):
        q.behaviour_scores(con, "alpha", "gradsim", 1, [1], [99])
    with pytest.raises(ValueError, match=r"test sample\(s\) \[2\] are in both"):
        q.behaviour_scores(con, "alpha", "gradsim", 1, [1, 2], [2, 3])
    with pytest.raises(ValueError, match="must be integers"):
        q.behaviour_scores(con, "alpha", "gradsim", 1, ["x"])
    with pytest.raises(NotFoundError):
        q.behaviour_scores(con, "alpha", "nope", 1, [1])


def test_group_influence_equals_a_loop_over_pairs(loaded):
    con, d, _ = loaded
    S = d.scores[("gradsim", 1)].astype(np.float64)
    df = q.group_influence(con, "alpha", "gradsim", 1)
    assert q.GROUP_COLUMNS == ("label",)
    cells = {}
    for j in range(d.n_test):
        for i in range(d.n_train):
            if np.isnan(S[j, i]):
                continue
            c = cells.setdefault((d.train_labels[i], d.test_labels[j]), [])
            c.append(S[j, i])
    assert len(df) == len(cells)
    positive_of_test = {}
    for (a, b), v in cells.items():
        positive_of_test[b] = positive_of_test.get(b, 0.0) + sum(x for x in v if x > 0)
    for r in df.itertuples():
        v = cells[(r.train_group, r.test_group)]
        assert r.total == pytest.approx(sum(v), rel=1e-5, abs=1e-6)
        assert r.mean == pytest.approx(sum(v) / len(v), rel=1e-5, abs=1e-6)
        assert r.positive == pytest.approx(sum(x for x in v if x > 0), rel=1e-5)
        assert r.share == pytest.approx(sum(x for x in v if x > 0) / positive_of_test[r.test_group], rel=1e-5)
        assert r.n_pairs == len(v)
    assert df.groupby("test_group").share.sum().to_numpy() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="cannot group by 'prompt'"):
        q.group_influence(con, "alpha", "gradsim", 1, by="prompt")
    with pytest.raises(ValueError, match="cannot group by"):
        q.group_influence(con, "alpha", "gradsim", 1, by="label; DROP TABLE scores")


def test_self_influence_ranked_and_missing_runs_say_so(loaded):
    con, _, _ = loaded
    df = q.self_influence(con, "alpha", "gradsim", 2)
    values = df.sort_values("train_id").score.to_numpy()
    assert df.train_id.tolist() == _order(values).tolist()
    assert q.self_influence_sets(con, "alpha").to_dict("records") == [{"method": "gradsim", "checkpoint": 2}]
    assert q.self_influence_sets(con, "plain").empty
    with pytest.raises(NotFoundError, match="no self-influence of method 'gradsim' at checkpoint 2; it has: none"):
        q.self_influence(con, "plain", "gradsim", 2)
    with pytest.raises(NotFoundError, match="it has: gradsim at checkpoint 2"):
        q.self_influence(con, "alpha", "datainf", 2)


def test_checks_and_status(loaded):
    con, _, _ = loaded
    rows = q.checks(con, "alpha")
    assert len(rows) == 2 and not rows.passed.iloc[0] and rows.kind.iloc[0] == "padding"
    status = q.check_status(con)
    assert status.to_dict("records") == [{"run_id": "alpha", "n_checks": 2, "n_failed": 1,
                                          "failed": "padding train 3"}]
    assert q.checks(con, "plain").empty
