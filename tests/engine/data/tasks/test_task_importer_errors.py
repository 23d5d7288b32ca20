"""Importers: each bad input raises InputError naming the file and, where it applies, the row and field."""

from __future__ import annotations

import json

import pytest

from engine.errors import InputError
from engine.data.tasks.importers import load_dataset, load_splits

GOOD = [
    {"prompt": "p1", "response": "r1", "label": "a", "split": "train"},
    {"prompt": "p2", "response": "r2", "label": "b", "split": "train"},
    {"prompt": "p3", "response": "r3", "label": "a", "split": "test"},
]


def raises(match_all, fn, *args):
    """Call fn(*args), expect InputError, and check every string of ``match_all`` is in its message."""
    with pytest.raises(InputError) as e:
        fn(*args)
    for part in match_all:
        assert part in str(e.value), (part, str(e.value))
    return str(e.value)


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet", "arrow"])
def test_missing_columns_lists_missing_and_found(tmp_path, fmt, ext):
    rows = [{"prompts": r["prompt"], "answer": r["response"], "split": r["split"]} for r in GOOD]
    path = getattr(fmt, ext)(tmp_path / f"d.{ext}", rows)
    message = raises([str(path), "response", "Columns found: prompts, answer, split"], load_dataset, path)
    assert "label/variation" not in message  # labels are optional


def test_missing_split_column_says_it_is_required(tmp_path, fmt):
    path = fmt.jsonl(tmp_path / "d.jsonl", [{k: v for k, v in r.items() if k != "split"} for r in GOOD])
    msg = raises([str(path), "split"], load_dataset, path)
    assert "prompt/prompts" not in msg  # only what is missing is listed as missing


def test_bad_split_value_names_row(tmp_path, fmt):
    rows = GOOD + [{"prompt": "p4", "response": "r4", "label": "b", "split": "validation"}]
    path = fmt.csv(tmp_path / "d.csv", rows)
    raises([str(path), "line 5", "'split'", "validation"], load_dataset, path)


def test_empty_split(tmp_path, fmt):
    path = fmt.jsonl(tmp_path / "d.jsonl", [{**r, "split": "train"} for r in GOOD])
    raises([str(path), "test split has no rows"], load_dataset, path)


@pytest.mark.parametrize("ext", ["jsonl", "csv"])
def test_non_utf8_names_offset_and_line(tmp_path, fmt, ext):
    path = getattr(fmt, ext)(tmp_path / f"d.{ext}", GOOD)
    data = path.read_bytes()
    offset = data.index(b"p2") + 1
    path.write_bytes(data[:offset] + b"\xe9" + data[offset:])
    line = data[:offset].count(b"\n") + 1
    assert line == (3 if ext == "csv" else 2)
    raises([str(path), "not UTF-8", f"byte offset {offset}", f"line {line}"], load_dataset, path)


@pytest.mark.parametrize("field,bad", [("prompt", None), ("response", ""), ("response", "   "), ("label", None)])
def test_null_or_empty_field_names_jsonl_line(tmp_path, fmt, field, bad):
    rows = [dict(r) for r in GOOD]
    rows[1][field] = bad
    path = fmt.jsonl(tmp_path / "d.jsonl", rows)
    raises([str(path), "line 2", f"'{field}'", "empty"], load_dataset, path)


def test_missing_key_in_one_jsonl_line(tmp_path, fmt):
    rows = [dict(r) for r in GOOD]
    del rows[2]["response"]
    path = fmt.jsonl(tmp_path / "d.jsonl", rows)
    raises([str(path), "line 3", "'response'"], load_dataset, path)


def test_empty_field_names_csv_line(tmp_path, fmt):
    rows = [dict(r) for r in GOOD]
    rows[2]["prompt"] = ""
    path = fmt.csv(tmp_path / "d.csv", rows)
    raises([str(path), "line 4", "'prompt'", "empty"], load_dataset, path)


def test_null_field_names_parquet_row(tmp_path, fmt):
    rows = [{"prompts": r["prompt"], "response": r["response"], "variation": r["label"], "split": r["split"]}
            for r in GOOD]
    rows[1]["prompts"] = None
    path = fmt.parquet(tmp_path / "d.parquet", rows)
    raises([str(path), "row 2", "'prompts'", "empty"], load_dataset, path)


def test_null_field_in_second_hf_data_file_names_that_file(tmp_path, fmt):
    rows = [{"prompts": r["prompt"], "response": r["response"], "variation": r["label"]} for r in GOOD]
    bad = [dict(rows[0]), {**rows[1], "response": None}]
    folder = fmt.hf_dataset(tmp_path / "ds", {"train": [rows[:2], bad], "test": [rows[2:]]})
    raises([str(folder / "train" / "data-00001-of-00002.arrow"), "row 2", "'response'"], load_dataset, folder)


def test_non_text_prompt(tmp_path, fmt):
    rows = [dict(r) for r in GOOD]
    rows[0]["prompt"] = 5
    path = fmt.jsonl(tmp_path / "d.jsonl", rows)
    raises([str(path), "line 1", "'prompt'", "must be text"], load_dataset, path)


def test_labels_only_in_test(tmp_path, fmt):
    rows = GOOD + [{"prompt": "p4", "response": "r4", "label": "z", "split": "test"},
                   {"prompt": "p5", "response": "r5", "label": "y", "split": "test"}]
    path = fmt.jsonl(tmp_path / "d.jsonl", rows)
    raises([str(path), "labels only in test: y, z — attribution cannot find a same-label training sample"],
           load_dataset, path)


def test_single_label(tmp_path, fmt):
    path = fmt.jsonl(tmp_path / "d.jsonl", [{**r, "label": "a"} for r in GOOD])
    raises([str(path), "only one label ('a')"], load_dataset, path)


def test_invalid_json_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(GOOD[0]) + "\n{not json\n")
    raises([str(path), "line 2", "not valid JSON"], load_dataset, path)


def test_jsonl_line_not_an_object(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(GOOD[0]) + "\n[1, 2]\n")
    raises([str(path), "line 2", "JSON object"], load_dataset, path)


def test_csv_row_with_wrong_field_count(tmp_path, fmt):
    path = fmt.csv(tmp_path / "d.csv", GOOD)
    path.write_text(path.read_text() + "p9,r9,a,train,extra\n")
    raises([str(path), "line 5", "5 fields", "header has 4"], load_dataset, path)


@pytest.mark.parametrize("ext,kind", [("parquet", "Parquet"), ("arrow", "Arrow")])
def test_corrupt_binary_file(tmp_path, ext, kind):
    path = tmp_path / f"d.{ext}"
    path.write_bytes(b"this is not a columnar file at all" * 10)
    raises([str(path), f"cannot read as {'an ' if kind == 'Arrow' else ''}{kind}"], load_dataset, path)


def test_truncated_parquet(tmp_path, fmt):
    path = fmt.parquet(tmp_path / "d.parquet", GOOD)
    path.write_bytes(path.read_bytes()[:-20])
    raises([str(path), "cannot read as Parquet"], load_dataset, path)


@pytest.mark.parametrize("name", ["d.txt", "d.json", "d"])
def test_unknown_extension(tmp_path, name):
    path = tmp_path / name
    path.write_text("x")
    raises([str(path), "unknown file type", ".jsonl"], load_dataset, path)


def test_empty_file(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n")
    raises([str(path), "empty"], load_dataset, path)


def test_missing_path(tmp_path, fmt):
    raises([str(tmp_path / "nope.csv"), "no such file"], load_dataset, tmp_path / "nope.csv")
    good = fmt.jsonl(tmp_path / "g.jsonl", GOOD)
    raises([str(tmp_path / "nope.csv"), "no such file"], load_splits, good, tmp_path / "nope.csv")


def test_hf_dict_without_test_split(tmp_path, fmt):
    rows = [{k: v for k, v in r.items() if k != "split"} for r in GOOD]
    folder = fmt.hf_dataset(tmp_path / "ds", {"train": [rows], "validation": [rows]})
    raises([str(folder / "dataset_dict.json"), "missing test"], load_dataset, folder)


def test_hf_state_lists_missing_file(tmp_path, fmt):
    rows = [{k: v for k, v in r.items() if k != "split"} for r in GOOD]
    folder = fmt.hf_dataset(tmp_path / "ds", {"train": [rows[:2]], "test": [rows[2:]]})
    (folder / "test" / "data-00000-of-00001.arrow").unlink()
    state = folder / "test" / "state.json"
    raises([str(state), "data-00000-of-00001.arrow", "does not exist"], load_dataset, folder)


def test_hf_corrupt_metadata(tmp_path, fmt):
    rows = [{k: v for k, v in r.items() if k != "split"} for r in GOOD]
    folder = fmt.hf_dataset(tmp_path / "ds", {"train": [rows[:2]], "test": [rows[2:]]})
    (folder / "train" / "state.json").write_text("{broken")
    raises([str(folder / "train" / "state.json"), "not valid JSON"], load_dataset, folder)
    (folder / "train" / "state.json").write_text(json.dumps({"_data_files": "x"}))
    raises([str(folder / "train" / "state.json"), "'_data_files'"], load_dataset, folder)
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": "train"}))
    raises([str(folder / "dataset_dict.json"), "'splits'"], load_dataset, folder)


def test_hf_split_folder_given_as_dataset(tmp_path, fmt):
    rows = [{k: v for k, v in r.items() if k != "split"} for r in GOOD]
    folder = fmt.hf_dataset(tmp_path / "ds", {"train": [rows[:2]], "test": [rows[2:]]})
    raises([str(folder / "train"), "one split", "dataset_dict.json"], load_dataset, folder / "train")


def test_folder_without_train_data(tmp_path, fmt):
    folder = tmp_path / "f"
    folder.mkdir()
    fmt.jsonl(folder / "test.jsonl", GOOD)
    raises([str(folder), "no train data", "train.jsonl"], load_dataset, folder)


def test_folder_with_two_train_files(tmp_path, fmt):
    folder = tmp_path / "f"
    folder.mkdir()
    for name in ("train.jsonl", "train.csv", "test.jsonl"):
        getattr(fmt, name.split(".")[1])(folder / name, GOOD)
    raises([str(folder), "more than one train source", "train.csv", "train.jsonl"], load_dataset, folder)


def test_load_splits_empty_test_file(tmp_path, fmt):
    train = fmt.jsonl(tmp_path / "train.jsonl", GOOD)
    test = tmp_path / "test.csv"
    test.write_text("prompt,response,label\n")
    raises([str(test), "test split has no rows"], load_splits, train, test)


def test_pandas_nan_label_is_empty(tmp_path):
    import pandas as pd
    path = tmp_path / "d.parquet"
    pd.DataFrame({"prompt": ["a", "b", "c"], "response": ["r", "r", "r"], "label": [1, None, 2],
                  "split": ["train", "train", "test"]}).to_parquet(path)
    raises([str(path), "row 2", "'label'", "empty"], load_dataset, path)
