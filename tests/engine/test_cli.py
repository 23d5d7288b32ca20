"""The CLI contract: demo, run, report --json, import-dataset, import-scores, bad input, killed runs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from engine.__main__ import main

REPO = Path(__file__).resolve().parents[2]


def _cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def _write_dataset(folder: Path, tiny_run: Path) -> Path:
    """The tiny run's samples as a JSONL dataset with a split column."""
    s = pq.read_table(tiny_run / "samples.parquet").to_pandas().sort_values(["split", "sample_id"])
    path = folder / "data.jsonl"
    s[["split", "prompt", "response", "label"]].to_json(path, orient="records", lines=True)
    return path


@pytest.mark.slow
def test_demo_tiny_then_report_json(tmp_path):
    db = tmp_path / "s.duckdb"
    r = _cli("demo", "--model", "tiny", "--store", str(db), "--quiet", "--analyses", "ihvp")
    assert r.returncode == 0, r.stderr
    for m in ("gradsim", "datainf", "lissa", "exact", "repsim"):
        assert m in r.stdout
    r = _cli("report", "--run", "demo-tiny", "--json", "--k", "5", "--store", str(db))
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    manifest = json.loads((tmp_path / "runs" / "demo-tiny" / "manifest.json").read_text())
    assert manifest["analyses"] == ["ihvp"] and (tmp_path / "runs" / "demo-tiny" / "ihvp_error.parquet").is_file()
    assert {row["method"] for row in rows} >= {"gradsim", "datainf", "lissa", "lissa_paper", "exact", "repsim"}
    assert all(row["k"] == 5 and 0 <= row["acc"] <= 1 and 0 <= row["coverage"] <= 1 for row in rows)


def test_import_scores_gives_the_same_metrics(tiny_run, tmp_path, capsys):
    data = _write_dataset(tmp_path, tiny_run)
    t = pq.read_table(tiny_run / "scores", filters=[("method", "=", "datainf"), ("checkpoint", "=", 2)])
    df = t.to_pandas().pivot(index="test_id", columns="train_id", values="score")
    (-df).to_csv(tmp_path / "if.csv")  # IF = -score, with pandas' index column, as the paper's cache files
    db = tmp_path / "s.duckdb"
    assert main(["import-scores", "--dataset", str(data), "--scores", str(tmp_path / "if.csv"),
                 "--method", "paper_datainf", "--run", "imported", "--store", str(db)]) == 0
    capsys.readouterr()
    assert main(["report", "--run", "imported", "--json", "--store", str(db)]) == 0
    got = json.loads(capsys.readouterr().out)[0]
    want = pq.read_table(tiny_run / "metrics.parquet").to_pandas()
    want = want[(want.method == "datainf") & (want.checkpoint == 2)].iloc[0]
    for key in ("acc", "coverage", "auprc", "chance_acc", "best_coverage", "n_distinct_top1", "k"):
        assert got[key] == pytest.approx(want[key], rel=1e-6), key


def test_import_dataset_keeps_a_usable_copy(tiny_run, tmp_path, capsys):
    data = _write_dataset(tmp_path, tiny_run)
    db = tmp_path / "st" / "s.duckdb"
    assert main(["import-dataset", str(data), "--name", "mine", "--store", str(db)]) == 0
    out = tmp_path / "st" / "datasets" / "mine"
    assert pq.read_table(out / "train.parquet").num_rows == 30
    from engine.tasks import load_dataset

    assert len(load_dataset(out).test) == 10


@pytest.mark.parametrize("content, message", [
    (b'{"prompt": "a", "label": "x", "split": "train"}\n', "response"),
    (b'{"prompt": "a", "response": "b", "label": "x", "split": "test"}\n', "train"),
    (b'{"prompt": "\xff\xfe", "response": "b", "label": "x", "split": "train"}\n', "UTF-8"),
])
def test_bad_datasets_fail_clearly_and_write_nothing(tmp_path, capsys, content, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    db = tmp_path / "st" / "s.duckdb"
    assert main(["import-dataset", str(bad), "--name", "x", "--store", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "st").exists()


def _with_text_cell(values, row, col):
    df = pd.DataFrame(values).astype(object)
    df.iat[row, col] = "x"
    return df


def test_bad_score_files_fail_clearly(tiny_run, tmp_path, capsys):
    data = _write_dataset(tmp_path, tiny_run)
    cases = {
        "short.csv": (pd.DataFrame(np.zeros((10, 29))), "columns"),
        "rows.csv": (pd.DataFrame(np.zeros((9, 30))), "rows"),
        "nan.csv": (_with_text_cell(np.zeros((10, 30)), row=3, col=5), "row 4"),
    }
    db = tmp_path / "st" / "s.duckdb"
    for name, (df, message) in cases.items():
        df.to_csv(tmp_path / name)
        assert main(["import-scores", "--dataset", str(data), "--scores", str(tmp_path / name),
                     "--method", "m", "--run", "r", "--store", str(db)]) == 2
        err = capsys.readouterr().err
        assert name in err and message in err, err
    assert not (tmp_path / "st").exists()


def test_unknown_model_fails_clearly_and_writes_nothing(tmp_path, capsys, tiny_spec):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({**tiny_spec, "model": {"name": "no-such-org/no-such-model"}}))
    db = tmp_path / "st" / "s.duckdb"
    assert main(["run", str(spec), "--store", str(db), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no-such-org/no-such-model" in err and "never downloads" in err
    assert not (tmp_path / "st" / "runs").exists() or not any((tmp_path / "st" / "runs").iterdir())


@pytest.mark.slow
def test_killed_run_is_not_ingested(tmp_path, tiny_spec):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({**tiny_spec, "name": "killed", "train": {**tiny_spec["train"], "epochs": 200}}))
    db = tmp_path / "s.duckdb"
    proc = subprocess.Popen([sys.executable, "-m", "engine", "run", str(spec), "--store", str(db), "--quiet"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = tmp_path / "runs"
    deadline = time.time() + 120
    while time.time() < deadline and not (runs.is_dir() and any(runs.iterdir())):
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    leftovers = list(runs.iterdir())
    assert leftovers and all(p.name.startswith(".") for p in leftovers)  # only a hidden temp folder
    r = _cli("ingest", "--store", str(db))
    assert r.returncode == 0 and "ingested 0" in r.stdout
    r = _cli("report", "--run", "killed", "--store", str(db))
    assert r.returncode == 2 and "killed" in r.stderr


def test_bad_analyses_flag_fails_clearly(tmp_path, capsys):
    assert main(["demo", "--model", "tiny", "--store", str(tmp_path / "s.duckdb"), "--analyses", "ihvp,bogus"]) == 2
    err = capsys.readouterr().err
    assert "--analyses: unknown analysis 'bogus'" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_convergence_needs_every_checkpoint(tmp_path, tiny_spec, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**tiny_spec, "scoring": {**tiny_spec["scoring"], "checkpoints": "last"}}))
    assert main(["run", str(spec), "--store", str(tmp_path / "s.duckdb"), "--analyses", "convergence"]) == 2
    assert "set scoring.checkpoints to all" in capsys.readouterr().err


def test_ingest_rebuilds_a_store_of_another_schema_version(tmp_path, tiny_run, capsys):
    import shutil

    import duckdb

    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / tiny_run.name)
    db = tmp_path / "s.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE schema_version (version INTEGER); INSERT INTO schema_version VALUES (1)")
    con.close()
    assert main(["ingest", "--store", str(db)]) == 0
    assert "rebuilding it" in capsys.readouterr().err
    import store

    with store.Store(db, read_only=True) as s:
        assert store.list_runs(s.con).run_id.tolist() == [tiny_run.name]


def test_report_carries_bootstrap_intervals(tiny_store, capsys):
    """report --json rows carry acc_ci / coverage_ci as [lo, hi] around the value; the text output shows them."""
    assert main(["report", "--run", "tiny-grammars", "--json", "--store", str(tiny_store)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(len(r["acc_ci"]) == 2 and r["acc_ci"][0] <= r["acc"] <= r["acc_ci"][1] for r in rows)
    assert all(r["coverage_ci"][0] <= r["coverage"] <= r["coverage_ci"][1] for r in rows)
    assert main(["report", "--run", "tiny-grammars", "--k", "2", "--json", "--store", str(tiny_store)]) == 0
    assert all(r["k"] == 2 and r["acc_ci"] is not None for r in json.loads(capsys.readouterr().out))
    assert main(["report", "--run", "tiny-grammars", "--store", str(tiny_store)]) == 0
    assert "acc 95% CI" in capsys.readouterr().out
