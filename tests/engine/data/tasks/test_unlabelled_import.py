"""Labels are optional: a dataset without a label column, or with an empty one, imports as unlabelled (every label
None); labels on some rows only are refused, naming the first row without one (in file order)."""

from __future__ import annotations

import pytest

from engine.data.datasets import save_dataset
from engine.data.tasks.base import Sample, TaskData, check_task
from engine.data.tasks.importers import load_dataset, load_splits
from engine.errors import InputError

ROWS = [
    {"prompt": "p1", "response": "r1", "split": "train"},
    {"prompt": "p2", "response": "r2", "split": "test"},
    {"prompt": "p3", "response": "r3", "split": "train"},
    {"prompt": "p4", "response": "r4", "split": "test"},
]


def _unlabelled(task: TaskData) -> None:
    assert not task.labelled and task.labels == []
    assert [s.label for s in (*task.train, *task.test)] == [None] * 4
    assert [s.prompt for s in task.train] == ["p1", "p3"] and [s.prompt for s in task.test] == ["p2", "p4"]


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet", "arrow"])
def test_no_label_column_imports_unlabelled(tmp_path, fmt, ext):
    _unlabelled(load_dataset(getattr(fmt, ext)(tmp_path / f"d.{ext}", ROWS)))


@pytest.mark.parametrize("empty", [None, "", "  "])
def test_an_empty_label_column_imports_unlabelled(tmp_path, fmt, empty):
    _unlabelled(load_dataset(fmt.jsonl(tmp_path / "d.jsonl", [{**r, "label": empty} for r in ROWS])))
    _unlabelled(load_dataset(fmt.csv(tmp_path / "d.csv", [{**r, "label": ""} for r in ROWS])))


def test_separate_splits_without_labels(tmp_path, fmt):
    train = fmt.jsonl(tmp_path / "train.jsonl", [r for r in ROWS if r["split"] == "train"])
    test = fmt.csv(tmp_path / "test.csv", [r for r in ROWS if r["split"] == "test"])
    _unlabelled(load_splits(train, test))


def test_labels_on_some_rows_name_the_first_row_without_one(tmp_path, fmt):
    rows = [{**r, "label": lab} for r, lab in zip(ROWS, ["a", None, "b", None])]
    path = fmt.jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(InputError) as e:
        load_dataset(path)
    # line 2 is a test row: the first row in the file, not the first of the train split (line 4)
    assert str(e.value).startswith(f"{path}, line 2: field 'label' is empty")
    assert "every row or on none" in str(e.value)


def test_a_labelled_file_beside_an_unlabelled_one_is_refused(tmp_path, fmt):
    train = fmt.jsonl(tmp_path / "train.jsonl", [{**r, "label": "a"} for r in ROWS if r["split"] == "train"])
    test = fmt.jsonl(tmp_path / "test.jsonl", [r for r in ROWS if r["split"] == "test"])
    with pytest.raises(InputError, match=r"test\.jsonl: no label column .* every row or on none"):
        load_splits(train, test)


def test_an_unlabelled_dataset_survives_save_and_reload(tmp_path, fmt):
    task = load_dataset(fmt.jsonl(tmp_path / "d.jsonl", ROWS), name="mine")
    folder = save_dataset(task, tmp_path / "datasets", "mine")
    _unlabelled(load_dataset(folder))


def test_check_task_refuses_labels_on_some_samples_only():
    task = TaskData("t", (Sample("p", "r", "a"), Sample("q", "s", None)), (Sample("x", "y", "a"),))
    with pytest.raises(InputError, match="train sample 1 has no label, but others do"):
        check_task(task)
    check_task(TaskData("t", (Sample("p", "r"), Sample("q", "s")), (Sample("x", "y"),)))  # unlabelled: fine
