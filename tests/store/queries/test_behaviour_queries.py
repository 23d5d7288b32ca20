"""store.queries.behaviour: behaviour rankings and group views in SQL, against numpy loops over the raw score
matrices that the synthetic run folders were written from."""

import numpy as np
import pytest

from store.errors import NotFoundError
from store.queries import behaviour as q


def test_behaviour_is_the_mean_of_the_query_rows(loaded_extras, order):
    con, d, _ = loaded_extras
    S = d.scores[("gradsim", 2)].astype(np.float64)
    query = [1, 4, 7]
    df = q.behaviour_scores(con, "alpha", "gradsim", 2, [7, 1, 4, 4])
    want = np.array([np.mean([S[j, i] for j in query]) for i in range(d.n_train)])
    got = df.sort_values("train_id").score.to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)
    assert df.train_id.tolist() == order(want).tolist() and df["rank"].tolist() == list(range(1, d.n_train + 1))
    assert df.control_mean.isna().all() and (df.label.to_numpy() == d.train_labels[df.train_id]).all()


def test_contrast_is_query_minus_control(loaded_extras):
    con, d, _ = loaded_extras
    S = d.scores[("datainf", 1)].astype(np.float64)
    query, control = [0, 2], [3, 5, 8]
    df = q.behaviour_scores(con, "alpha", "datainf", 1, query, control).sort_values("train_id")
    for i, r in enumerate(df.itertuples()):
        qm = sum(S[j, i] for j in query) / len(query)
        cm = sum(S[j, i] for j in control) / len(control)
        assert r.query_mean == pytest.approx(qm, rel=1e-6, nan_ok=True)
        assert r.control_mean == pytest.approx(cm, rel=1e-6, nan_ok=True)
        assert r.score == pytest.approx(qm - cm, rel=1e-5, abs=1e-6, nan_ok=True)


def test_behaviour_groups_are_checked(loaded_extras):
    con, _, _ = loaded_extras
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


def test_group_influence_equals_a_loop_over_pairs(loaded_extras):
    con, d, _ = loaded_extras
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
