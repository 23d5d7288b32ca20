"""store.queries.runs: the run list, one run's details, its methods and checkpoints, the counts, the
fine-tuning loss."""

from __future__ import annotations

from store.queries import runs as q


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


def test_train_loss(loaded_once):
    con, _ = loaded_once
    tl = q.train_loss(con, "tied")
    assert list(tl.columns) == ["epoch", "step", "loss"] and tl["step"].is_monotonic_increasing
