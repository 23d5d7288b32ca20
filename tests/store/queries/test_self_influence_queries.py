"""store.queries.self_influence: each training sample's self-influence, ranked by the one ranking rule."""

import pytest

from store.errors import NotFoundError
from store.queries import self_influence as q


def test_self_influence_ranked_and_missing_runs_say_so(loaded_extras, order):
    con, _, _ = loaded_extras
    df = q.self_influence(con, "alpha", "gradsim", 2)
    values = df.sort_values("train_id").score.to_numpy()
    assert df.train_id.tolist() == order(values).tolist()
    assert q.self_influence_sets(con, "alpha").to_dict("records") == [{"method": "gradsim", "checkpoint": 2}]
    assert q.self_influence_sets(con, "plain").empty
    with pytest.raises(NotFoundError, match="no self-influence of method 'gradsim' at checkpoint 2; it has: none"):
        q.self_influence(con, "plain", "gradsim", 2)
    with pytest.raises(NotFoundError, match="it has: gradsim at checkpoint 2"):
        q.self_influence(con, "alpha", "datainf", 2)
