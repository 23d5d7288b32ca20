"""Uploaded datasets: every kind of bad file gets its own message naming the file and row/field; nothing is kept."""

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.errors import InputError
from engine.data.uploads import keep_upload, list_datasets, validate_upload


def rows(n_labels=2, per_label=3, ids=True):
    out = []
    for split, n in (("train", per_label), ("test", 1)):
        for lab in range(n_labels):
            for i in range(n):
                r = {"prompt": f"p {split} {lab} {i}", "response": f"r{lab}", "label": f"L{lab}", "split": split}
                if ids:
                    r["id"] = f"{split}-{lab}-{i}"
                out.append(r)
    return out


def jsonl(rs) -> bytes:
    return "\n".join(json.dumps(r) for r in rs).encode("utf-8")


def _count(split, rs=None):
    return sum(r["split"] == split for r in (rs or rows()))


def test_a_valid_upload_is_kept(tmp_path):
    task = validate_upload("good.jsonl", jsonl(rows()))
    assert (len(task.train), len(task.test)) == (_count("train"), _count("test"))
    assert [s.prompt for s in task.train] == [r["prompt"] for r in rows() if r["split"] == "train"]
    assert list(task.labels) == sorted({r["label"] for r in rows()})
    keep_upload(task, tmp_path, "good")
    assert list_datasets(tmp_path) == ["good"]


def test_a_valid_parquet_upload():
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows()), buf)
    assert len(validate_upload("data.parquet", buf.getvalue()).train) == _count("train")


@pytest.mark.parametrize("filename, data, message", [
    ("wrong.jsonl", jsonl([{"question": "q", "answer": "a", "label": "x", "split": "train"}]),
     r"wrong\.jsonl: missing column\(s\): prompt"),
    ("empty.jsonl", b"", r"empty\.jsonl: the file is empty"),
    ("latin1.csv", "prompt,response,label,split\ncaf\u00e9,r,a,train\n".encode("latin-1"),
     r"latin1\.csv, line 2: not UTF-8 text"),
    ("big.jsonl", b"x" * (2 * 2**20), r"big\.jsonl: 2\.0 MB is over the upload limit of 1 MB"),
    ("one.jsonl", jsonl(rows(n_labels=1)), r"one\.jsonl: only one label \('L0'\)"),
    ("dup.jsonl", jsonl(rows()[:2] + [{**rows()[0], "prompt": "other"}] + rows()[2:]),
     r"dup\.jsonl, line 3: field 'id' repeats id 'train-0-0', first used at dup\.jsonl, line 1"),
    ("nosplit.jsonl", jsonl([{k: v for k, v in r.items() if k != "split"} for r in rows()]),
     r"missing column\(s\): split"),
    ("badsplit.jsonl", jsonl(rows()[:-1] + [{**rows()[-1], "split": "validation"}]),
     r"badsplit\.jsonl, line 8: field 'split' is 'validation'"),
    ("notest.jsonl", jsonl([r for r in rows() if r["split"] == "train"]), r"the test split has no rows"),
    ("blank.jsonl", jsonl([{**rows()[0], "response": "  "}] + rows()[1:]),
     r"blank\.jsonl, line 1: field 'response' is empty"),
    ("data.exe", b"MZ", r"data\.exe: unsupported file type"),
])
def test_bad_uploads_get_their_own_message_and_nothing_is_kept(system_temp, filename, data, message):
    with pytest.raises(InputError, match=message) as e:
        validate_upload(filename, data, max_bytes=2**20)
    assert str(system_temp) not in str(e.value) and "upload-" not in str(e.value)  # no temp paths in messages
    assert list(system_temp.iterdir()) == []  # the temporary copy is gone


@pytest.fixture
def system_temp(tmp_path, monkeypatch):
    """The folder ``tempfile`` hands out (where validate_upload puts its temporary copy), empty to start with."""
    import tempfile

    folder = tmp_path / "system-temp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_the_temporary_copy_is_made_there_and_removed_after_a_valid_upload_too(system_temp, monkeypatch):
    import engine.data.tasks

    seen = []
    real = engine.data.tasks.load_dataset

    def spy(path, **kw):
        seen.append(path)
        assert path.is_file() and system_temp in path.parents  # the copy the importer parses
        return real(path, **kw)

    monkeypatch.setattr(engine.data.tasks, "load_dataset", spy)
    validate_upload("good.jsonl", jsonl(rows()))
    assert len(seen) == 1 and list(system_temp.iterdir()) == []


def test_the_temporary_copy_is_removed_when_the_importer_crashes(system_temp, monkeypatch):
    import engine.data.tasks

    def crash(path, **kw):
        raise MemoryError("simulated")

    monkeypatch.setattr(engine.data.tasks, "load_dataset", crash)
    with pytest.raises(MemoryError):
        validate_upload("good.jsonl", jsonl(rows()))
    assert list(system_temp.iterdir()) == []
