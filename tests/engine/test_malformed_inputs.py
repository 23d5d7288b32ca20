"""The generated malformed inputs (tests/malformed_inputs.py) through ``import-dataset`` and ``import-scores``:
each exits with status 2 and one ``error:`` line naming the file, line and field, without a traceback, and
writes nothing (no store, no datasets or runs folder, no temp folder)."""

import re

import pytest
from malformed_inputs import DATASET_CASES, N_TEST, N_TRAIN, SCORE_CASES, UTF8_BOM, _scores, jsonl, rows, score_csv

from engine.cli import main

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # a raw control character would reach the terminal


def _refused(capsys, argv, store_dir, pattern):
    assert main([*argv, "--store", str(store_dir / "s.duckdb")]) == 2
    out = capsys.readouterr()
    err = out.err
    assert err.startswith("error: ") and err.endswith("\n") and "Traceback" not in err, err[:2000]
    assert pattern.search(err), err[:2000]
    assert not CONTROL.search(err.rstrip("\n")) and len(err) < 3000  # one readable line, not the bad data
    assert not store_dir.exists()  # no database, no datasets/ or runs/ folder, no temp folder
    return err


def _scores_file(tmp_path):
    path = tmp_path / "good-scores.csv"
    path.write_bytes(score_csv(_scores()))
    return path


@pytest.mark.parametrize("case", DATASET_CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("command", ["import-dataset", "import-scores"])
def test_a_malformed_dataset_is_refused(tmp_path, capsys, case, command):
    bad = tmp_path / "in" / case.filename
    bad.parent.mkdir()
    bad.write_bytes(case.data)
    argv = (["import-dataset", str(bad), "--name", "mine"] if command == "import-dataset" else
            ["import-scores", "--dataset", str(bad), "--scores", str(_scores_file(tmp_path)), "--method", "m",
             "--run", "r"])
    _refused(capsys, argv, tmp_path / "st", case.pattern(str(bad)))


@pytest.mark.parametrize("command", ["import-dataset", "import-scores"])
def test_an_empty_folder_is_refused(tmp_path, capsys, command):
    folder = tmp_path / "in"
    folder.mkdir()
    argv = (["import-dataset", str(folder), "--name", "mine"] if command == "import-dataset" else
            ["import-scores", "--dataset", str(folder), "--scores", str(_scores_file(tmp_path)), "--method", "m",
             "--run", "r"])
    _refused(capsys, argv, tmp_path / "st", re.compile(re.escape(str(folder)) + r": no train data"))


@pytest.mark.parametrize("case", SCORE_CASES, ids=lambda c: c.name)
def test_a_malformed_score_file_is_refused(tmp_path, capsys, case):
    data = tmp_path / "data.jsonl"
    data.write_bytes(jsonl(rows()))
    bad = tmp_path / case.filename
    bad.write_bytes(case.data)
    _refused(capsys, ["import-scores", "--dataset", str(data), "--scores", str(bad), "--method", "m", "--run", "r"],
             tmp_path / "st", case.pattern(str(bad)))


def test_the_valid_inputs_of_the_set_are_accepted(tmp_path, capsys):
    """The set's base dataset and score file, and the base dataset saved with a UTF-8 byte-order mark (as many
    editors write UTF-8), are imported: the cases above fail for what was broken in them, nothing else."""
    from engine.data.tasks import load_dataset

    name, data = UTF8_BOM
    bom = tmp_path / name
    bom.write_bytes(data)
    assert main(["import-dataset", str(bom), "--name", "bom", "--store", str(tmp_path / "st" / "s.duckdb")]) == 0
    kept = load_dataset(tmp_path / "st" / "datasets" / "bom")
    assert (len(kept.train), len(kept.test)) == (N_TRAIN, N_TEST) and kept.train[0].prompt == rows()[0]["prompt"]
    good = tmp_path / "data.jsonl"
    good.write_bytes(jsonl(rows()))
    assert main(["import-scores", "--dataset", str(good), "--scores", str(_scores_file(tmp_path)), "--method", "m",
                 "--run", "r", "--store", str(tmp_path / "st" / "s.duckdb")]) == 0
    capsys.readouterr()
