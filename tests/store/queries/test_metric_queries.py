"""store.queries.metrics (the leaderboard) against numpy references computed from the same synthetic runs."""

from __future__ import annotations

import numpy as np
import pytest

from store.queries import metrics as q
from store.queries import scores


def test_stored_leaderboard_is_the_manifest_metrics(loaded, ref):
    con, runs = loaded
    df = q.leaderboard(con)
    assert len(df) == 8 and set(df["source"]) == {"stored"}
    for row in df.itertuples():
        d = runs[row.run_id]
        want = ref.metrics(d.scores[(row.method, row.checkpoint)], d.train_labels, d.test_labels, d.k_default)
        assert row.k == d.k_default
        for key, value in want.items():
            assert getattr(row, key) == pytest.approx(value)


@pytest.mark.parametrize("k", [1, 2, 7, 11, 50])
def test_leaderboard_custom_k_matches_numpy(loaded, ref, k):
    con, runs = loaded
    df = q.leaderboard(con, run="plain", k=k)
    d = runs["plain"]
    assert len(df) == 4 and set(df["run_id"]) == {"plain"}
    k_eff = min(k, d.n_train)
    for row in df.itertuples():
        want = ref.metrics(d.scores[(row.method, row.checkpoint)], d.train_labels, d.test_labels, k_eff)
        assert row.k == k_eff
        assert row.source == ("stored" if k_eff == d.k_default else "computed")
        for key in ("acc", "coverage", "chance_acc", "chance_coverage", "best_coverage", "n_distinct_top1", "auprc"):
            assert getattr(row, key) == pytest.approx(want[key]), key


def test_leaderboard_custom_k_with_ties(loaded, ref):
    con, runs = loaded
    d = runs["tied"]
    for row in q.leaderboard(con, run="tied", k=3).itertuples():
        want = ref.metrics(d.scores[(row.method, row.checkpoint)], d.train_labels, d.test_labels, 3)
        assert row.coverage == pytest.approx(want["coverage"]) and row.acc == pytest.approx(want["acc"])
        assert row.n_distinct_top1 == want["n_distinct_top1"]


def test_leaderboard_without_stored_metrics(store, runs_dir, make_run, ref):
    d = make_run(runs_dir, "bare", write_metrics=False)
    store.ingest_all(runs_dir)
    df = q.leaderboard(store.con)
    assert set(df["source"]) == {"computed"} and df["auprc"].isna().all()
    for row in df.itertuples():
        want = ref.metrics(d.scores[(row.method, row.checkpoint)], d.train_labels, d.test_labels, d.k_default)
        assert row.coverage == pytest.approx(want["coverage"])


def test_leaderboard_all_runs_and_bad_k(loaded):
    con, _ = loaded
    assert sorted(set(q.leaderboard(con, k=2)["run_id"])) == ["plain", "tied"]
    for bad in (0, -1, 2.5, "3; DROP TABLE runs"):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            q.leaderboard(con, k=bad)


@pytest.mark.parametrize("k", [None, 1, 3, 8])
def test_consistent_with_engine_metrics_including_nan_scores(store_k, runs_dir, make_run, k):
    """Rankings and metrics agree with engine.evaluation.metrics (ties -> lowest index, NaN last)."""
    from engine.evaluation import metrics

    store = store_k
    d = make_run(runs_dir, "nan", n_train=12, n_test=6, seed=5, ties=True, nans=0.2, write_metrics=False)
    store.ingest_all(runs_dir)
    for row in q.leaderboard(store.con, k=k).itertuples():
        S = d.scores[(row.method, row.checkpoint)]
        want = metrics.summarize(S, d.train_labels, d.test_labels, row.k)
        for key in ("acc", "coverage", "chance_acc", "chance_coverage", "best_coverage", "n_distinct_top1"):
            assert getattr(row, key) == pytest.approx(want[key]), key
        order = metrics.ranking(S)
        for test_id in range(d.n_test):
            top = scores.top_k(store.con, "nan", row.method, row.checkpoint, test_id, d.n_train)
            assert top["train_id"].tolist() == order[test_id].tolist()
        firsts = scores.top1_counts(store.con, "nan", row.method, row.checkpoint)
        assert dict(zip(firsts["train_id"], firsts["n_top1"])) == {
            i: int((order[:, 0] == i).sum()) for i in range(d.n_train)}
        for train_id in (0, 5):
            rev = scores.test_prompts_ranking_train(store.con, "nan", row.method, row.checkpoint, train_id, d.n_train)
            ranks = {j: int(np.where(order[j] == train_id)[0][0]) + 1 for j in range(d.n_test)}
            assert dict(zip(rev["test_id"], rev["rank"])) == ranks


def test_leaderboard_intervals_are_the_bootstrap_of_the_per_test_hits(loaded, ref):
    """Custom k: intervals bootstrapped from per-test hits that match a numpy reference, with the one rule."""
    from engine.evaluation.metrics import bootstrap_ci

    con, runs = loaded
    d = runs["plain"]
    for row in q.leaderboard(con, run="plain", k=3).itertuples():
        S = d.scores[(row.method, row.checkpoint)]
        order = ref.rank_order(S)
        same = np.asarray(d.test_labels)[:, None] == np.asarray(d.train_labels)[order]
        hits = q.per_test_hits(con, "plain", row.method, row.checkpoint, 3)
        np.testing.assert_array_equal(hits.top1_same.to_numpy(), same[:, 0])
        np.testing.assert_array_equal(hits.n_same.to_numpy(), same[:, :3].sum(axis=1))
        assert (row.acc_lo, row.acc_hi) == pytest.approx(bootstrap_ci(same[:, 0].astype(float)))
        assert (row.coverage_lo, row.coverage_hi) == pytest.approx(bootstrap_ci(same[:, :3].sum(axis=1) / 3))
        assert row.acc_lo <= row.acc <= row.acc_hi


def test_run_folders_written_before_intervals_still_load_and_get_them(loaded_once):
    """The synthetic runs' metrics.parquet has no acc_lo/... columns (the format before intervals): it ingests
    (optional columns read as NULL) and the leaderboard bootstraps the intervals from the scores."""
    import pyarrow.parquet as pq

    con, runs = loaded_once
    folder = con.execute("SELECT folder FROM runs WHERE run_id = 'tied'").fetchone()[0]
    assert "acc_lo" not in pq.read_schema(f"{folder}/metrics.parquet").names
    df = q.leaderboard(con, run="tied")
    assert set(df.source) == {"stored"} and df[["acc_lo", "acc_hi", "coverage_lo", "coverage_hi"]].notna().all().all()
    assert ((df.acc_lo <= df.acc) & (df.acc <= df.acc_hi)).all()
