"""The CLI contract: demo, run, report --json, import-dataset, import-scores, bad input, killed runs."""

import argparse
import json
import os
import re
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

from engine.cli import build_parser, main
from engine.spec.run_spec import RunSpec, TrainSpec, spec_rule

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
    manifest = json.loads((tiny_run / "manifest.json").read_text())  # the dataset is the run's samples
    assert pq.read_table(out / "train.parquet").num_rows == manifest["n_train"]
    from engine.data.tasks import load_dataset

    assert len(load_dataset(out).test) == manifest["n_test"]


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


def _flag(command: str, flag: str) -> argparse.Action:
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    (action,) = [a for a in sub.choices[command]._actions if flag in a.option_strings]
    return action


def test_spec_flags_take_their_choices_from_the_spec_fields(capsys):
    """--device & co. offer what the spec field's rule allows (declared once, in engine.spec.run_spec)."""
    devices = list(spec_rule("device")["choices"])
    assert devices == ["auto", "cpu", "cuda"]
    for command in ("demo", "attribute", "tokens"):
        assert _flag(command, "--device").choices == devices, command
    assert _flag("demo", "--device").default == _flag("attribute", "--device").default == RunSpec().device
    assert _flag("tokens", "--device").default is None  # the run's own
    assert _flag("attribute", "--dtype").choices == list(spec_rule("dtype")["choices"])
    assert _flag("attribute", "--loss-on").choices == list(spec_rule("train.loss_on")["choices"])
    assert _flag("attribute", "--loss-on").default == TrainSpec().loss_on == "response"
    assert _flag("attribute", "--score-checkpoints").choices == list(spec_rule("scoring.checkpoints")["choices"])
    assert _flag("attribute", "--score-checkpoints").default == "last"
    assert _flag("demo", "--model").choices == list(spec_rule("model.name")["suggest"]) == ["tiny", "smollm2-135m"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--device", "tpu"])
    assert "invalid choice: 'tpu'" in capsys.readouterr().err


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
    header, first = capsys.readouterr().out.splitlines()[:2]
    assert header.split()[3:7] == ["acc", "acc_ci95", "coverage", "coverage_ci95"]
    assert re.fullmatch(r"\[\d\.\d{3},\d\.\d{3}\]", first.split()[4])


def test_report_carries_the_lds_and_a_metagrad_row(tiny_analysis_run, tmp_path, capsys):
    """A run with the retraining analysis and metagrad: every JSON row has its method's LDS with interval and its
    LDS on the metagrad prompts; one more row has method "metagrad" (no label metrics; its LDS, its prompt count);
    the text report opens with the decomposition in words."""
    import store

    db = tmp_path / "s.duckdb"
    with store.Store(db) as s:
        s.ingest_run(tiny_analysis_run)
    assert main(["report", "--run", "tiny-analyses", "--json", "--store", str(db)]) == 0
    rows = json.loads(capsys.readouterr().out)
    lds = pq.read_table(tiny_analysis_run / "retrain_lds.parquet").to_pandas().set_index("method")
    dec = pq.read_table(tiny_analysis_run / "retrain_decomposition.parquet").to_pandas().set_index("method")
    (mg,) = [r for r in rows if r["method"] == "metagrad"]
    assert mg["acc"] is None and mg["metagrad_prompts"] == 3
    assert mg["lds"] == pytest.approx(lds.loc["metagrad", "lds"]) and len(mg["lds_ci"]) == 2
    for r in rows:
        assert r["lds"] == pytest.approx(lds.loc[r["method"], "lds"])
        assert r["lds_metagrad_prompts"] == pytest.approx(dec.loc[r["method"], "lds"])
    assert main(["report", "--run", "tiny-analyses", "--store", str(db)]) == 0
    assert capsys.readouterr().out.startswith("On the 3 test prompts with exact metagradients (metagrad)")


# ---------------------------------------------------------------------------------------------- report, rebuild, --k


def test_report_prints_one_line_per_method_and_checkpoint(tiny_run, tiny_store, tmp_path, capsys):
    import shutil

    db = tmp_path / "s.duckdb"
    shutil.copy(tiny_store, db)
    assert main(["report", "--run", tiny_run.name, "--store", str(db)]) == 0
    lines = capsys.readouterr().out.splitlines()
    columns = ["method", "checkpoint", "k", "acc", "acc_ci95", "coverage", "coverage_ci95", "auprc", "chance_acc",
               "chance_coverage", "best_coverage", "n_distinct_top1"]
    assert lines[0].split() == columns
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    want = pq.read_table(tiny_run / "metrics.parquet").to_pandas()
    want = want[want.k == manifest["k_default"]].sort_values(["method", "checkpoint"])
    assert len(lines) - 1 == len(want) == len(manifest["methods"]) * len(manifest["checkpoints"])
    got = {(row[0], int(row[1])): row for row in (line.split() for line in lines[1:])}
    for r in want.itertuples():
        row = got[(r.method, r.checkpoint)]
        assert int(row[2]) == r.k and int(row[-1]) == r.n_distinct_top1
        # floats are printed with 3 decimals, in the column order of the header (intervals: [lo,hi])
        floats = [c for c in columns[3:-1] if not c.endswith("_ci95")]
        assert [v for v, c in zip(row[3:-1], columns[3:-1]) if c in floats] == [
            f"{getattr(r, c):.3f}" for c in floats], r.method


@pytest.mark.parametrize("argv", [
    ["report", "--run", "r", "--k", "0"],
    ["report", "--run", "r", "--k", "-3"],
    ["import-scores", "--dataset", "d.jsonl", "--scores", "s.csv", "--method", "m", "--run", "r", "--k", "0"],
])
def test_k_must_be_positive(tmp_path, capsys, argv):
    assert main([*argv, "--store", str(tmp_path / "st" / "s.duckdb")]) == 2
    err = capsys.readouterr().err
    assert err == "error: --k must be positive\n"
    assert not (tmp_path / "st").exists()


def test_rebuild_store_recreates_the_database_from_the_run_folders(tiny_run, tmp_path, capsys):
    import shutil

    import store

    runs = tmp_path / "runs"
    for name in ("run-a", "run-b"):
        shutil.copytree(tiny_run, runs / name)
    db = tmp_path / "s.duckdb"
    assert main(["ingest", "--store", str(db)]) == 0
    shutil.rmtree(runs / "run-b")  # its rows are now stale
    db.write_bytes(db.read_bytes()[:4096])  # and the file is damaged
    capsys.readouterr()
    assert main(["rebuild-store", "--store", str(db)]) == 0
    assert capsys.readouterr().out == f"rebuilt {db} from {runs}\n"
    with store.Store(db, read_only=True) as s:
        assert store.list_runs(s.con).run_id.tolist() == ["run-a"]
        n = len(store.samples(s.con, "run-a"))
    manifest = json.loads((runs / "run-a" / "manifest.json").read_text())
    assert n == manifest["n_train"] + manifest["n_test"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp database left


# ---------------------------------------------------------------------------------------------- main() itself


def test_main_restores_the_sigterm_handler_warning_filters_and_log_handlers(tmp_path, monkeypatch, capsys):
    """main() changes them while a command runs (SIGTERM unwinds like Ctrl-C, FutureWarnings are hidden, a log
    handler is set up) and puts the caller's back afterwards, whether the command worked, failed or was
    interrupted."""
    import logging
    import warnings

    import engine.cli as cli

    seen = {}

    def probe(args):
        seen["sigterm"] = signal.getsignal(signal.SIGTERM)
        seen["future_hidden"] = any(f[0] == "ignore" and f[2] is FutureWarning for f in warnings.filters)
        seen["log_handlers"] = list(logging.getLogger().handlers)
        raise {"ok": None, "bad": cli.InputError("bad"), "interrupt": KeyboardInterrupt()}[args.run] or SystemExit

    def ours(signum, frame):
        pass

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # as in a plain embedding process: basicConfig would add one
    monkeypatch.setattr(cli, "cmd_report", lambda args: None if args.run == "ok" else probe(args))
    previous = signal.signal(signal.SIGTERM, ours)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            before = list(warnings.filters)
            for run, status in (("ok", 0), ("bad", 2), ("interrupt", 130)):
                assert main(["report", "--run", run, "--store", str(tmp_path / "s.duckdb")]) == status, run
                assert signal.getsignal(signal.SIGTERM) is ours, run
                assert warnings.filters == before, run
                assert root.handlers == [], run
            assert seen["sigterm"] is cli._raise_interrupt and seen["future_hidden"] and seen["log_handlers"]
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert "interrupted: nothing was committed" in capsys.readouterr().err


def _lora_model():
    from engine.model.base import load_base
    from engine.model.finetune import add_lora
    from engine.spec.run_spec import LoraSpec

    model, tok = load_base("tiny")
    return add_lora(model, LoraSpec(r=2, alpha=4, dropout=0.0), seed=0), tok


def _encoded(tok, n=2):
    from engine.data.encoding import encode
    from engine.data.tasks.base import Sample

    return [encode(Sample(f"prompt {i}", f"answer {i}", "x"), tok, "{prompt} {response}", 32, "response")
            for i in range(n)]


def _train_mode_gradients():
    from engine.features.grads import sample_features

    model, tok = _lora_model()
    model.train()
    sample_features(model, _encoded(tok), tok.pad_token_id, torch_cpu(), progress=False)


def _no_lora_blocks():
    from engine.features.grads import sample_features
    from engine.model.base import load_base

    model, tok = load_base("tiny")
    sample_features(model.eval(), _encoded(tok), tok.pad_token_id, torch_cpu(), progress=False)


def _mismatched_shards():
    from engine.features.grads import merge_features, sample_features

    model, tok = _lora_model()
    f = sample_features(model.eval(), _encoded(tok), tok.pad_token_id, torch_cpu(), progress=False)
    merge_features([f, type(f)(grads=f.grads[:1], reps=f.reps, loss=f.loss, block_names=f.block_names[:1])])


def _rept_bad_layer():
    from engine.features.rept import rept_features

    model, tok = _lora_model()
    rept_features(model.eval(), _encoded(tok), tok.pad_token_id, torch_cpu(), layer=7, progress=False)


def _rept_train_mode():
    from engine.features.rept import rept_features

    model, tok = _lora_model()
    rept_features(model.train(), _encoded(tok), tok.pad_token_id, torch_cpu(), progress=False)


def _query(fn, *args):
    def call():
        import store

        with store.Store(":memory:") as s:
            getattr(store, fn)(s.con, *args)
    return call


def torch_cpu():
    import torch

    return torch.device("cpu")


@pytest.mark.parametrize("trigger, message", [
    (_train_mode_gradients, "per-sample gradients need model.eval()"),
    (_no_lora_blocks, "the model has no LoRA blocks"),
    (_mismatched_shards, "feature shards have different LoRA blocks"),
    (_rept_bad_layer, "RepT parameter 'layer' must be -1 or in 1..2, got 7"),
    (_rept_train_mode, "RepT features need model.eval()"),
    (_query("leaderboard", None, 0), "k must be a positive integer, got 0"),
    (_query("analysis_table", "r", "nope"), "unknown analysis table 'nope'"),
], ids=lambda v: getattr(v, "__name__", None) if callable(v) else None)
def test_feature_and_query_errors_reach_the_user_as_error_lines(monkeypatch, tmp_path, capsys, trigger, message):
    """What engine/features/grads.py, engine/features/rept.py and the store's queries raise for a model, features or an
    argument they cannot use is printed as ``error: ...`` with exit status 2, not a traceback."""
    import engine.cli as cli

    monkeypatch.setattr(cli, "cmd_report", lambda args: trigger())
    assert main(["report", "--run", "r", "--store", str(tmp_path / "s.duckdb")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and "Traceback" not in err, err


# ---------------------------------------------------------------------------------------------- a locked store

HOLDER = "import sys, store; s = store.Store(sys.argv[1]); print('ready', flush=True); sys.stdin.read()"


def test_every_command_on_a_store_another_process_holds(tiny_run, tmp_path, monkeypatch, capsys, tiny_spec):
    """Another process (the app) holds the database: commands that only need to write a run folder write it and
    leave the ingest to that process; those that must read or write the database fail with an ``error:``
    naming the file; nothing is written to the database; once it is free the folders go in."""
    import shutil

    import store

    db = tmp_path / "s.duckdb"
    runs = tmp_path / "runs"

    def fake_pipeline(spec, runs_dir, progress=True):  # the pipeline itself is tested elsewhere
        folder = Path(runs_dir) / spec.run_name
        shutil.copytree(tiny_run, folder)
        return folder

    monkeypatch.setattr("engine.pipeline.run.run_pipeline", fake_pipeline)
    data = _write_dataset(tmp_path, tiny_run)
    t = pq.read_table(tiny_run / "scores", filters=[("method", "=", "gradsim"), ("checkpoint", "=", 2)])
    t.to_pandas().pivot(index="test_id", columns="train_id", values="score").to_csv(tmp_path / "if.csv")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**tiny_spec, "name": "locked-run"}))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        before = db.read_bytes()
        capsys.readouterr()
        commands = {
            "run": (["run", str(spec)], 0),
            "demo": (["demo", "--model", "tiny", "--name", "locked-demo", "--analyses", "none"], 0),
            "import-dataset": (["import-dataset", str(data), "--name", "mine"], 0),
            "import-scores": (["import-scores", "--dataset", str(data), "--scores", str(tmp_path / "if.csv"),
                               "--method", "ext", "--run", "locked-import"], 0),
            "report": (["report", "--run", "locked-run"], 2),
            "ingest": (["ingest"], 2),
            "rebuild-store": (["rebuild-store"], 2),
            "worker": (["worker", "--once", "--jobs", str(tmp_path / "jobs")], 0),
        }
        for name, (argv, status) in commands.items():
            assert main([*argv, "--store", str(db), "--quiet"]) == status, name
            out = capsys.readouterr()
            assert "Traceback" not in out.err, (name, out.err)
            if name in ("run", "demo", "import-scores"):  # the folder is complete; the holder ingests it later
                assert "is in use by another process" in out.err and "will be ingested by the app" in out.err
            if status == 2:
                assert out.err.startswith(f"error: database {db} is in use by another process"), (name, out.err)
        assert db.read_bytes() == before  # not a byte changed while it was held
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
        holder.stdout.close()
    assert sorted(p.name for p in runs.iterdir()) == ["locked-demo", "locked-import", "locked-run"]
    assert (tmp_path / "datasets" / "mine" / "train.parquet").is_file()
    assert main(["ingest", "--store", str(db)]) == 0
    assert "ingested 3 new or changed run(s)" in capsys.readouterr().out
    with store.Store(db, read_only=True) as s:
        assert sorted(store.list_runs(s.con).run_id) == ["locked-demo", "locked-import", "locked-run"]


# ---------------------------------------------------------------------------------------------- Ctrl-C


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_exits_130_and_leaves_nothing(tmp_path, tiny_spec, sig):
    """Ctrl-C (SIGINT) or a cancel (SIGTERM) in the middle of a run: exit status 130, a one-line message and no
    traceback, and neither a run folder nor its temp folder."""
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({**tiny_spec, "name": "interrupted", "train": {**tiny_spec["train"],
                                                                                "epochs": 400}}))
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "engine", "run", str(spec), "--store", str(tmp_path / "s.duckdb"),
                             "--quiet"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a shell starts background jobs with SIGINT ignored, and children inherit that
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (runs.is_dir() and any(runs.iterdir())):  # the temp folder is there
            time.sleep(0.1)
        assert runs.is_dir() and [p.name for p in runs.iterdir()] == [f".interrupted.tmp-{proc.pid}"]
        time.sleep(0.5)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted: nothing was committed" and "Traceback" not in err, err
    assert list(runs.iterdir()) == []
    assert not (tmp_path / "s.duckdb").exists()
