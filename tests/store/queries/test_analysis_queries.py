"""The analysis tables: ingested from a run folder, read back by the queries, and kept by a rebuild."""

import shutil

import pyarrow.parquet as pq
import pytest

import store
from engine.analysis.stages import TABLES


@pytest.fixture
def analysis_db(tiny_analysis_run, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_analysis_run, runs / tiny_analysis_run.name)
    path = tmp_path / "s.duckdb"
    with store.Store(path) as s:
        s.ingest_all(runs)
    return path, runs, tiny_analysis_run.name


def test_every_analysis_table_round_trips(analysis_db):
    path, runs, run = analysis_db
    with store.Store(path, read_only=True) as s:
        assert store.analyses(s.con, run) == ["ihvp", "convergence", "retrain", "stability"]
        for table in TABLES:
            got = store.analysis_table(s.con, run, table)
            want = pq.read_table(runs / run / f"{table}.parquet").to_pandas()
            assert len(got) == len(want) > 0, table
            assert list(got.columns) == list(TABLES[table]), table
        points = store.retrain_points(s.con, run)
        groups = store.analysis_table(s.con, run, "retrain_groups")
        removals = (~groups.kind.isin(["noise", "identity", "repeat"])).sum()  # the others predict nothing
        # 4 methods x removals x 10 test samples, and metagrad on its 3 prompts only
        assert len(points) == removals * (4 * 10 + 3)
        assert points[points.method == "metagrad"].test_id.nunique() == 3
        assert set(points.columns) >= {"method", "group_id", "kind", "test_id", "label", "predicted", "dloss",
                                       "noise_floor", "within_noise"}
        noise = store.retrain_noise(s.con, run)
        raw = groups[groups.kind == "noise"]
        assert set(noise.measure) == {"mean_abs_dloss", "kl_mean", "abs_behaviour_change", "param_change"}
        got = noise.set_index("measure")
        assert got.loc["mean_abs_dloss", "floor"] == pytest.approx(raw.mean_abs_dloss.abs().max())
        assert got.loc["param_change", "mean"] == pytest.approx(raw.param_change.abs().mean())
        assert (got.n_seeds == 2).all()
        summary = store.retrain_counterfactual_summary(s.con, run)
        cf = store.analysis_table(s.con, run, "retrain_counterfactual")
        assert set(summary.method) == set(cf.method)
        for r in summary.itertuples():
            rows = cf[cf.method == r.method]
            assert r.n_prompts == len(rows) and r.gain == pytest.approx((rows.dloss - rows.random_mean).mean())
            assert r.beats_random == pytest.approx(rows.beats_random.mean())
            assert r.n_beats == rows.beats_random.sum() and r.n_random == rows.n_random.min() >= 19
            assert r.mean_rank == pytest.approx(rows["rank"].mean()) and r.binom_p == pytest.approx(rows.binom_p.iloc[0])
        with pytest.raises(ValueError, match="unknown analysis table"):
            store.analysis_table(s.con, run, "runs; DROP TABLE runs")
        with pytest.raises(store.UnknownRunError):
            store.analyses(s.con, "no-such-run")


def test_rebuild_after_deleting_the_database_keeps_the_analyses(analysis_db):
    path, runs, run = analysis_db
    with store.Store(path, read_only=True) as s:
        before = {t: store.analysis_table(s.con, run, t) for t in TABLES}
    path.unlink()
    store.rebuild(path, runs)
    with store.Store(path, read_only=True) as s:
        for t, df in before.items():
            after = store.analysis_table(s.con, run, t)
            assert after.equals(df), t


def test_runs_without_analyses_have_none(tiny_store, tiny_run):
    with store.Store(tiny_store, read_only=True) as s:
        assert store.analyses(s.con, tiny_run.name) == []
        assert store.analysis_table(s.con, tiny_run.name, "ihvp_error").empty
