"""Importers: every accepted layout reads back exactly the rows written, and nothing is written."""

from __future__ import annotations

import json

import pytest

from engine.data.tasks.base import Sample
from engine.data.tasks.importers import load_dataset, load_splits


def listing(folder):
    return sorted((str(p), p.stat().st_size) for p in folder.rglob("*"))


@pytest.mark.parametrize("paper", [False, True])
@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet", "arrow"])
def test_single_file_with_split_column(tmp_path, small_task, fmt, ext, paper):
    records = fmt.rows(small_task.train, paper, "train") + fmt.rows(small_task.test, paper, "test")
    path = getattr(fmt, ext)(tmp_path / f"mydata.{ext}", records)
    before = listing(tmp_path)
    task = load_dataset(path)
    assert listing(tmp_path) == before
    assert (task.name, task.train, task.test) == ("mydata", small_task.train, small_task.test)


def test_hf_save_to_disk_with_int_labels_and_several_data_files(tmp_path, small_task, fmt):
    names = sorted(small_task.labels)
    def as_int(rows):
        return [{**r, "variation": names.index(r["variation"])} for r in rows]
    train = as_int(fmt.rows(small_task.train, paper=True))
    test = as_int(fmt.rows(small_task.test, paper=True))
    folder = fmt.hf_dataset(tmp_path / "grammars_ds", {"train": [train[:7], train[7:]], "test": [test]})
    assert json.loads((folder / "train" / "state.json").read_text())["_data_files"][1]["filename"] == \
        "data-00001-of-00002.arrow"
    before = listing(tmp_path)
    task = load_dataset(folder, name="g")
    assert listing(tmp_path) == before
    assert task.name == "g"
    assert task.train == tuple(Sample(s.prompt, s.response, str(names.index(s.label))) for s in small_task.train)
    assert len(task.test) == len(small_task.test)
    assert task.labels == [str(i) for i in range(len(names))]


def test_hf_split_without_state_json_reads_data_files_in_order(tmp_path, small_task, fmt):
    train = fmt.rows(small_task.train, paper=True)
    folder = fmt.hf_dataset(tmp_path / "ds", {"train": [train[:4], train[4:]],
                                              "test": [fmt.rows(small_task.test, paper=True)]})
    (folder / "train" / "state.json").unlink()
    assert load_dataset(folder).train == small_task.train


def test_hf_dataset_with_extra_split(tmp_path, small_task, fmt):
    folder = fmt.hf_dataset(tmp_path / "ds", {"train": [fmt.rows(small_task.train, True)],
                                              "validation": [fmt.rows(small_task.test, True)],
                                              "test": [fmt.rows(small_task.test, True)]})
    assert load_dataset(folder).test == small_task.test


def test_folder_with_train_and_test_files(tmp_path, small_task, fmt):
    folder = tmp_path / "pair"
    folder.mkdir()
    fmt.jsonl(folder / "train.jsonl", fmt.rows(small_task.train, paper=False))
    fmt.csv(folder / "test.csv", fmt.rows(small_task.test, paper=True))
    task = load_dataset(str(folder))
    assert (task.name, task.train, task.test) == ("pair", small_task.train, small_task.test)


def test_folder_with_train_and_test_split_folders(tmp_path, small_task, fmt):
    folder = tmp_path / "splits"
    fmt.hf_split(folder / "train", [fmt.rows(small_task.train, True)])
    fmt.hf_split(folder / "test", [fmt.rows(small_task.test, True)])
    assert load_dataset(folder).train == small_task.train


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
def test_load_splits_files(tmp_path, small_task, fmt, ext):
    # a stray split column is ignored when the splits come as separate files
    tr = getattr(fmt, ext)(tmp_path / f"a.{ext}", fmt.rows(small_task.train, True, "test"))
    te = getattr(fmt, ext)(tmp_path / f"b.{ext}", fmt.rows(small_task.test, False))
    task = load_splits(tr, te)
    assert (task.name, task.train, task.test) == (tmp_path.name, small_task.train, small_task.test)


def test_load_splits_hf_split_folders(tmp_path, small_task, fmt):
    folder = fmt.hf_dataset(tmp_path / "ds", {"train": [fmt.rows(small_task.train, True)],
                                              "test": [fmt.rows(small_task.test, True)]})
    task = load_splits(folder / "train", folder / "test", name="x")
    assert (task.name, task.train, task.test) == ("x", small_task.train, small_task.test)


def test_text_is_kept_verbatim(tmp_path, fmt):
    tricky = [
        {"prompt": "line one\nline \u2028two, \"quoted\"", "response": "r\u00e9ponse \u2603", "label": 1,
         "split": "train"},
        {"prompt": "p2", "response": "x", "label": 2, "split": "train"},
        {"prompt": "p3", "response": "y", "label": 1, "split": " Test "},
    ]
    for ext in ("jsonl", "csv", "parquet"):
        task = load_dataset(getattr(fmt, ext)(tmp_path / f"t.{ext}", tricky))
        assert task.train[0] == Sample("line one\nline \u2028two, \"quoted\"", "r\u00e9ponse \u2603", "1"), ext
        assert task.test == (Sample("p3", "y", "1"),)


def test_csv_with_byte_order_mark(tmp_path, small_task, fmt):
    path = fmt.csv(tmp_path / "bom.csv", fmt.rows(small_task.train, False, "train") +
                   fmt.rows(small_task.test, False, "test"))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_dataset(path).train == small_task.train
