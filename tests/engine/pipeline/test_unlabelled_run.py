"""An unlabelled dataset (no label column) through import-dataset, run (with the three analyses), ingest, report
and attribute: nothing errors, and every label metric is NULL — never a number standing for a missing label."""

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

import store
from engine.cli import main
from engine.evaluation import metrics
from engine.evaluation.metrics import LABEL_METRICS
from engine.runfolder.runformat import read_manifest


def test_the_run_has_no_label_metric_and_keeps_the_rest(tiny_unlabelled_run):
    m = read_manifest(tiny_unlabelled_run)
    assert m["labels"] == [] and m["k_default"] == metrics.UNLABELLED_K
    assert set(m["analyses"]) == {"ihvp", "convergence", "retrain", "stability"}
    df = pq.read_table(tiny_unlabelled_run / "metrics.parquet").to_pandas()
    assert len(df) == len(m["methods"]) * len(m["checkpoints"])
    assert df[list(LABEL_METRICS)].isna().all().all()
    assert (df.n_distinct_top1 >= 1).all() and (df.k == metrics.UNLABELLED_K).all()
    assert pq.read_table(tiny_unlabelled_run / "label_metrics.parquet").num_rows == 0
    samples = pq.read_table(tiny_unlabelled_run / "samples.parquet").to_pandas()
    assert samples.label.isna().all() and len(samples) == m["n_train"] + m["n_test"]
    agreement = pq.read_table(tiny_unlabelled_run / "agreement.parquet").to_pandas()
    assert len(agreement) and agreement.overlap.between(0, 1).all()


def test_the_analyses_run_without_labels(tiny_unlabelled_run):
    groups = pq.read_table(tiny_unlabelled_run / "retrain_groups.parquet").to_pandas()
    assert "label" not in set(groups.kind)  # no label to remove
    assert {"noise", "single", "random", "lds"} <= set(groups.kind)
    assert not groups.description.str.contains("None").any()
    lds = pq.read_table(tiny_unlabelled_run / "retrain_lds.parquet").to_pandas()
    assert lds.lds.notna().any()
    ihvp = pq.read_table(tiny_unlabelled_run / "ihvp_error.parquet").to_pandas()
    assert ihvp[["acc", "acc_reference", "acc_exact"]].isna().all().all()
    assert ihvp.rel_error.notna().all()


def _number_for_a_label_metric(rows: list[dict]) -> list:
    return [(r["method"], c, r[c]) for r in rows for c in LABEL_METRICS if c in r and r[c] is not None]


def test_import_run_report_through_the_cli(tmp_path, capsys, unlabelled_data, tiny_spec):
    db = tmp_path / "s.duckdb"
    data = unlabelled_data
    assert main(["import-dataset", str(data), "--name", "mine", "--store", str(db)]) == 0
    out = capsys.readouterr().out
    assert "30 train, 10 test, no labels" in out
    kept = tmp_path / "datasets" / "mine"
    spec = {**tiny_spec, "name": "unlabelled-cli", "task": {"name": "file", "path": str(kept)},
            "scoring": {**tiny_spec["scoring"], "methods": ["gradsim", "repsim", "bm25"]}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["run", str(tmp_path / "spec.yaml"), "--store", str(db), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["report", "--run", "unlabelled-cli", "--json", "--store", str(db)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 3 * 2 and all(r["labelled"] is False for r in rows)
    assert _number_for_a_label_metric(rows) == []
    assert all(r["acc_ci"] is None and r["coverage_ci"] is None for r in rows)
    assert main(["report", "--run", "unlabelled-cli", "--store", str(db)]) == 0
    text = capsys.readouterr().out
    assert "no ground truth" in text and "needs labels" in text and "NaN" not in text and "nan" not in text
    with store.Store(db, read_only=True) as s:
        assert not store.run_labelled(s.con, "unlabelled-cli")
        board = store.leaderboard(s.con, run="unlabelled-cli", k=3)  # a custom k is computed in SQL: still NULL
        assert board[list(LABEL_METRICS)].isna().all().all() and (board.k == 3).all()


def test_labels_on_some_rows_only_fail_at_import(tmp_path, capsys, unlabelled_data):
    data = unlabelled_data
    lines = data.read_text().splitlines()
    lines[4] = json.dumps({**json.loads(lines[4]), "label": "rule_a"})
    data.write_text("\n".join(lines))
    assert main(["import-dataset", str(data), "--name", "mine", "--store", str(tmp_path / "s.duckdb")]) == 2
    err = capsys.readouterr().err
    assert f"{data}, line 1: field 'label' is empty" in err
    assert not (tmp_path / "datasets" / "mine").exists()


@pytest.mark.slow
def test_attribute_an_adapter_on_unlabelled_data(foreign_adapter, tmp_path, capsys):
    base, out, dataset = foreign_adapter
    rows = [json.loads(line) for line in dataset.read_text().splitlines()]
    data = tmp_path / "unlabelled.jsonl"
    data.write_text("\n".join(json.dumps({k: v for k, v in r.items() if k != "label"}) for r in rows))
    db = tmp_path / "s.duckdb"
    assert main(["attribute", "--model", str(base), "--adapter", str(out), "--dataset", str(data),
                 "--methods", "gradsim,datainf", "--name", "attr-unlabelled", "--store", str(db), "--quiet"]) == 0
    printed = capsys.readouterr().out  # attribute prints the run's metrics: "needs labels", never NaN
    assert "needs labels" in printed and not any(w in printed.split() for w in ("NaN", "nan", "None"))
    assert main(["report", "--run", "attr-unlabelled", "--json", "--store", str(db)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["method"] for r in rows} == {"gradsim", "datainf"} and _number_for_a_label_metric(rows) == []
    assert all(isinstance(r["n_distinct_top1"], int) and not math.isnan(r["n_distinct_top1"]) for r in rows)
    scores = pq.read_table(db.parent / "runs" / "attr-unlabelled" / "scores").to_pandas()
    assert np.isfinite(scores.score).all()


def test_report_json_rows_carry_stability_with_and_without_labels(tiny_unlabelled_run, tiny_analysis_run, tmp_path,
                                                                  capsys):
    db = tmp_path / "s.duckdb"
    with store.Store(db) as s:
        for folder in (tiny_unlabelled_run, tiny_analysis_run):
            s.ingest_run(folder)
    for folder in (tiny_unlabelled_run, tiny_analysis_run):
        assert main(["report", "--run", folder.name, "--json", "--store", str(db)]) == 0
        rows = json.loads(capsys.readouterr().out)
        # the analysis run's extra "metagrad" row (exact metagradients, not a catalog method) has no stability
        assert all(r["stability"] is None for r in rows if r["method"] == "metagrad")
        rows = [r for r in rows if r["method"] != "metagrad"]
        table = pq.read_table(folder / "stability.parquet").to_pandas()
        summary = pq.read_table(folder / "stability_methods.parquet").to_pandas().set_index("method")
        for r in rows:
            assert 0 <= r["stability"] <= 1
            assert r["stability"] == pytest.approx(summary.loc[r["method"], "stability"], abs=1e-12)
            mine = table[table.method == r["method"]]
            assert set(r["perturbations"]) == set(mine.perturbation)
            for p in mine.itertuples():
                assert r["perturbations"][p.perturbation]["overlap"] == p.overlap
        assert main(["report", "--run", folder.name, "--store", str(db)]) == 0
        assert "stability" in capsys.readouterr().out.splitlines()[-len(rows) - 1]  # a column of the text report
