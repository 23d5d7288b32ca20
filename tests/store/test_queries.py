"""store.queries against numpy references computed from the same synthetic runs."""

from __future__ import annotations

import numpy as np
import pytest

from store import queries as q
from store.db import Store
from store.errors import (
    NotFoundError,
    UnknownCheckpointError,
    UnknownMethodError,
    UnknownRunError,
    UnknownSampleError,
)
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


def test_list_runs_and_info(loaded_once):
    con, runs = loaded_once
    df = q.list_runs(con)
    assert sorted(df["run_id"]) == ["plain", "tied"]
    row = df.set_index("run_id").loc["plain"]
    assert row["n_train"] == 11 and row["methods"] == "gradsim, repsim" and row["checkpoints"] == "1, 2"
    assert list(row["labels"]) == ["alpha", "beta", "gamma"]
    info = q.run_info(con, "tied")
    assert info["spec"]["seed"] == 3 and info["labels"] == ["alpha", "beta", "gamma"]
    assert info["methods"] == ["datainf", "gradsim"] and info["checkpoints"] == [1, 2]
    assert info["n_scores"] == 4 * 15 * 6 and info["k_default"] == runs["tied"].k_default
    assert info["versions"]["engine"]


def test_methods_checkpoints(loaded_once):
    con, _ = loaded_once
    assert q.methods(con, "plain") == ["gradsim", "repsim"]
    assert q.checkpoints(con, "plain") == [1, 2]
    assert q.checkpoints(con, "plain", "repsim") == [1, 2]


def test_summary(loaded_once):
    con, runs = loaded_once
    s = q.summary(con)
    assert s["runs"] == 2 and s["methods"] == 3 and s["score_sets"] == 8
    assert s["samples"] == sum(d.n_train + d.n_test for d in runs.values())
    assert s["scores"] == sum(S.size for d in runs.values() for S in d.scores.values())
    assert s["last_ingested"] is not None


@pytest.mark.parametrize("k", [1, 4, 15, 99])
def test_top_k_matches_numpy_with_ties(loaded, ref, k):
    con, runs = loaded
    d = runs["tied"]
    for (method, ckpt), S in d.scores.items():
        order = ref.rank_order(S)
        for test_id in range(d.n_test):
            df = q.top_k(con, "tied", method, ckpt, test_id, k)
            want = order[test_id, :k]
            assert df["train_id"].tolist() == want.tolist()
            assert df["rank"].tolist() == list(range(1, len(want) + 1))
            np.testing.assert_array_equal(df["score"].to_numpy(np.float32), S[test_id, want])
            same = d.train_labels[want] == d.test_labels[test_id]
            assert df["same_label"].tolist() == same.tolist()
            assert df["prompt"].tolist() == [d.train_prompts[i] for i in want]
    assert len(np.unique(d.scores[("gradsim", 1)][0])) < d.n_train  # the fixture really has ties


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


def test_score_matrix(loaded):
    con, runs = loaded
    for name, d in runs.items():
        for (method, ckpt), S in d.scores.items():
            M = q.score_matrix(con, name, method, ckpt)
            assert M.dtype == np.float32
            np.testing.assert_array_equal(M, S)


def test_top1_counts(loaded, ref):
    con, runs = loaded
    d = runs["tied"]
    S = d.scores[("datainf", 2)]
    top1 = ref.rank_order(S)[:, 0]
    df = q.top1_counts(con, "tied", "datainf", 2)
    assert len(df) == d.n_train and df["n_top1"].sum() == d.n_test
    counts = dict(zip(df["train_id"], df["n_top1"]))
    assert counts == {i: int((top1 == i).sum()) for i in range(d.n_train)}
    assert df["n_top1"].is_monotonic_decreasing
    assert df["share"].iloc[0] == pytest.approx(df["n_top1"].iloc[0] / d.n_test)


@pytest.mark.parametrize("k", [1, 3, 15])
def test_test_prompts_ranking_train(loaded, ref, k):
    con, runs = loaded
    d = runs["tied"]
    S = d.scores[("gradsim", 1)]
    order = ref.rank_order(S)
    for train_id in range(d.n_train):
        rank = {j: int(np.where(order[j] == train_id)[0][0]) + 1 for j in range(d.n_test)}
        want = sorted(((r, j) for j, r in rank.items() if r <= k))
        df = q.test_prompts_ranking_train(con, "tied", "gradsim", 1, train_id, k)
        assert list(zip(df["rank"], df["test_id"])) == want
        assert df["same_label"].tolist() == [bool(d.test_labels[j] == d.train_labels[train_id]) for _, j in want]


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


def test_injection_in_names_is_harmless(loaded_once):
    con, _ = loaded_once
    before = con.execute("SELECT count(*) FROM topk").fetchone()[0]
    evil = "tied' OR '1'='1"
    for call in (lambda: q.run_info(con, evil), lambda: q.top_k(con, evil, "gradsim", 1, 0, 3),
                 lambda: q.samples(con, "x'; DROP TABLE samples; --"), lambda: q.leaderboard(con, run=evil)):
        with pytest.raises(UnknownRunError):
            call()
    with pytest.raises(UnknownMethodError):
        q.top_k(con, "tied", "gradsim' OR 1=1 --", 1, 0, 3)
    assert q.samples(con, "tied", label="x' OR '1'='1").empty
    assert con.execute("SELECT count(*) FROM topk").fetchone()[0] == before
    assert len(q.list_runs(con)) == 2


def test_unknown_names_raise_lookup_errors(loaded):
    con, _ = loaded
    with pytest.raises(LookupError, match="run 'nope'"):
        q.methods(con, "nope")
    with pytest.raises(UnknownMethodError, match=r"method 'lissa'.*'tied'.*known methods: datainf, gradsim"):
        q.top_k(con, "tied", "lissa", 1, 0, 3)
    with pytest.raises(UnknownCheckpointError, match="checkpoint 7.*known checkpoints: 1, 2"):
        q.score_matrix(con, "tied", "gradsim", 7)
    with pytest.raises(UnknownSampleError, match="no test sample with id 99"):
        q.top_k(con, "tied", "gradsim", 1, 99, 3)
    with pytest.raises(UnknownSampleError, match="no train sample"):
        q.test_prompts_ranking_train(con, "tied", "gradsim", 1, 99, 3)
    with pytest.raises(NotFoundError):
        q.checkpoints(con, "tied", "lissa")
    for fn in (q.label_metrics, q.agreement, q.train_loss, q.run_info):
        with pytest.raises(UnknownRunError):
            fn(con, "nope")


def test_label_metrics_agreement_train_loss(loaded_once):
    con, runs = loaded_once
    lm = q.label_metrics(con, "tied")
    assert set(lm["method"]) == {"datainf", "gradsim"} and set(lm["label"]) <= {"alpha", "beta", "gamma"}
    one = q.label_metrics(con, "tied", method="gradsim", checkpoint=2)
    assert set(one["method"]) == {"gradsim"} and set(one["checkpoint"]) == {2}
    assert one["n_test"].sum() == runs["tied"].n_test
    ag = q.agreement(con, "tied")
    assert len(ag) == 2 and ag["spearman"].between(-1, 1).all()
    assert len(q.agreement(con, "tied", checkpoint=1)) == 1
    tl = q.train_loss(con, "tied")
    assert list(tl.columns) == ["epoch", "step", "loss"] and tl["step"].is_monotonic_increasing


def test_queries_accept_store_object(store, runs_dir, make_run):
    make_run(runs_dir, "a")
    store.ingest_all(runs_dir)
    assert q.methods(store, "a") == ["datainf", "gradsim"]


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
            top = q.top_k(store.con, "nan", row.method, row.checkpoint, test_id, d.n_train)
            assert top["train_id"].tolist() == order[test_id].tolist()
        firsts = q.top1_counts(store.con, "nan", row.method, row.checkpoint)
        assert dict(zip(firsts["train_id"], firsts["n_top1"])) == {
            i: int((order[:, 0] == i).sum()) for i in range(d.n_train)}
        for train_id in (0, 5):
            rev = q.test_prompts_ranking_train(store.con, "nan", row.method, row.checkpoint, train_id, d.n_train)
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


def test_score_row_is_one_row_of_the_matrix(loaded):
    con, runs = loaded
    for name, d in runs.items():
        for (method, ckpt), S in d.scores.items():
            for test_id in range(d.n_test):
                row = q.score_row(con, name, method, ckpt, test_id)
                assert row.dtype == np.float32 and row.shape == (d.n_train,)
                np.testing.assert_array_equal(row, S[test_id])
    with pytest.raises(UnknownSampleError, match="no test sample with id 99"):
        q.score_row(con, "tied", "gradsim", 1, 99)


@pytest.mark.parametrize("k", [1, 3, 5, 15, 40])
def test_topk_counts_match_numpy(loaded, ref, k):
    """How often each training sample is in a test prompt's top k (and first): from topk for k within the stored
    ranks, ranked in place beyond; against counting over the numpy ranking."""
    con, runs = loaded
    d = runs["tied"]
    for (method, ckpt), S in d.scores.items():
        order = ref.rank_order(S)
        df = q.topk_counts(con, "tied", method, ckpt, k)
        assert df["train_id"].tolist() == list(range(d.n_train))
        assert df["n"].tolist() == [int((order[:, :k] == i).sum()) for i in range(d.n_train)]
        assert df["n_top1"].tolist() == [int((order[:, 0] == i).sum()) for i in range(d.n_train)]
