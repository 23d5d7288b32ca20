"""A generated set of malformed inputs for everything that takes a user's data: the dataset importer
(``python -m engine import-dataset``), the Jobs page's upload form, and ``python -m engine import-scores``.

Each case is a file (name and bytes) and the message it must get: a regular expression over the error text,
naming the file and, where it applies, the line or row and the field. The tests
(``tests/engine/test_malformed_inputs.py``, ``tests/app/test_malformed_uploads.py``) check that each is refused
with that message, without a traceback, and that nothing is written anywhere.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

N_LABELS, N_TRAIN_PER_LABEL, N_TEST_PER_LABEL = 2, 3, 1
N_TRAIN, N_TEST = N_LABELS * N_TRAIN_PER_LABEL, N_LABELS * N_TEST_PER_LABEL


def rows() -> list[dict]:
    """A valid dataset: 2 labels, 3 train and 1 test sample each, train rows first (JSONL line = index + 1)."""
    out = []
    for split, n in (("train", N_TRAIN_PER_LABEL), ("test", N_TEST_PER_LABEL)):
        for lab in range(N_LABELS):
            for i in range(n):
                out.append({"prompt": f"prompt {split} {lab} {i}", "response": f"answer {lab}", "label": f"L{lab}",
                            "split": split})
    return out


def jsonl(rs: list[dict]) -> bytes:
    return "\n".join(json.dumps(r) for r in rs).encode("utf-8")


def csv_bytes(rs: list[dict], encoding: str = "utf-8") -> bytes:
    cols = list(rs[0])
    lines = [",".join(cols)] + [",".join(str(r[c]) for c in cols) for r in rs]
    return ("\n".join(lines) + "\n").encode(encoding)


def with_field(i: int, **fields) -> list[dict]:
    """``rows()`` with row ``i`` changed."""
    rs = rows()
    rs[i] = {**rs[i], **fields}
    return rs


@dataclass(frozen=True)
class Case:
    name: str  # what is wrong
    filename: str
    data: bytes
    message: str  # regex the error must match; FILE stands for the file's name as the user gave it

    def pattern(self, shown_name: str) -> re.Pattern:
        return re.compile(self.message.replace("FILE", re.escape(shown_name)))


def _fake_parquet() -> bytes:
    return b"PAR1" + b"\x00not a parquet file\x00" * 10 + b"PAR1"


def _parquet(rs: list[dict]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rs), buf)
    return buf.getvalue()


BIG = 5 * 2**20  # a 5 MB field

DATASET_CASES = [
    Case("empty", "empty.jsonl", b"", r"FILE: the file is empty"),
    Case("whitespace only", "blank.jsonl", b"  \n\t\n   \n", r"FILE: the file is empty"),
    Case("whitespace only (CSV)", "blank.csv", b"   \n \n", r"FILE: missing column\(s\): prompt"),
    Case("truncated JSON", "truncated.jsonl", jsonl(rows())[:-9], r"FILE, line 8: not valid JSON"),
    Case("a JSON array", "array.jsonl", json.dumps(rows()).encode(), r"FILE, line 1: expected a JSON object per line"),
    Case("wrong columns", "columns.jsonl",
         jsonl([{"question": r["prompt"], "answer": r["response"], "category": r["label"], "split": r["split"]}
                for r in rows()]),
         r"FILE: missing column\(s\): prompt/prompts; response\. "),
    Case("non-UTF-8", "latin1.csv", csv_bytes(with_field(1, prompt="caf\u00e9 cr\u00e8me"), "latin-1"),
         r"FILE.*line 3.*not UTF-8|FILE.*not UTF-8.*line 3"),
    Case("a UTF-16 byte-order mark", "utf16.csv", csv_bytes(rows(), "utf-16"), r"FILE.*not UTF-8.*line 1|FILE.*line 1"),
    Case("a NUL byte", "nul.jsonl", jsonl(with_field(1, prompt="before\x00after")),
         r"FILE, line 2: field 'prompt' contains the control character '\\x00'"),
    Case("ANSI escape codes", "ansi.jsonl", jsonl(with_field(3, response="\x1b[31mred\x1b[0m")),
         r"FILE, line 4: field 'response' contains the control character '\\x1b'"),
    Case("a 5 MB field", "big.jsonl", jsonl(with_field(0, prompt="x" * BIG)),
         r"FILE, line 1: field 'prompt' is 5,242,880 characters long"),
    Case("a 5 MB field (CSV)", "big.csv", csv_bytes(with_field(0, prompt="x" * BIG)), r"FILE, line \d+: .*field"),
    Case("null labels", "nulls.jsonl", jsonl(with_field(4, label=None)), r"FILE, line 5: field 'label' is empty"),
    Case("one label", "one.jsonl", jsonl([{**r, "label": "L0"} for r in rows()]), r"FILE: only one label \('L0'\)"),
    Case("a bad split value", "split.jsonl", jsonl(with_field(7, split="validation")),
         r"FILE, line 8: field 'split' is 'validation'; expected 'train' or 'test'"),
    Case("a fake Parquet", "fake.parquet", _fake_parquet(), r"FILE: cannot read as Parquet"),
    Case("a Parquet file with a number for a prompt", "numbers.parquet",
         _parquet([{**r, "prompt": i} for i, r in enumerate(rows())]),
         r"FILE, row 1: field 'prompt' must be text, got int"),
]

# A UTF-8 byte-order mark in front of valid data is how many editors save UTF-8: it is read, not refused.
UTF8_BOM = ("bom.csv", b"\xef\xbb\xbf" + csv_bytes(rows()))


def score_csv(values) -> bytes:
    """A wide score CSV with pandas' index column, as the paper's cached files are."""
    lines = ["," + ",".join(str(i) for i in range(len(values[0])))]
    lines += [f"{j}," + ",".join(str(v) for v in row) for j, row in enumerate(values)]
    return ("\n".join(lines) + "\n").encode()


def _scores(n_test=N_TEST, n_train=N_TRAIN, cell=None):
    values = [[(j + 1) * 0.1 - i * 0.01 for i in range(n_train)] for j in range(n_test)]
    if cell is not None:
        (j, i), value = cell
        values[j][i] = value
    return values


SCORE_CASES = [
    Case("empty", "empty.csv", b"", r"score file FILE: not a readable CSV"),
    Case("a column too few", "short.csv", score_csv(_scores(n_train=N_TRAIN - 1)),
         rf"score file FILE: columns must be training indices 0..{N_TRAIN - 1} .*missing \['{N_TRAIN - 1}'\]"),
    Case("a column too many", "wide.csv", score_csv(_scores(n_train=N_TRAIN + 2)),
         rf"score file FILE: columns must be training indices 0..{N_TRAIN - 1}"),
    Case("a row too many", "long.csv", score_csv(_scores(n_test=N_TEST + 1)),
         rf"score file FILE: has {N_TEST + 1} rows but the dataset has {N_TEST} test samples"),
    Case("a non-numeric cell", "text.csv", score_csv(_scores(cell=((1, 3), "abc"))),
         r"score file FILE: row 2 \(test sample 1\), column '3' is not a finite number: 'abc'"),
    Case("a NaN score", "nan.csv", score_csv(_scores(cell=((0, 2), "nan"))),
         r"score file FILE: row 1 \(test sample 0\), column '2' is not a finite number"),
    Case("an inf score", "inf.csv", score_csv(_scores(cell=((1, 0), "inf"))),
         r"score file FILE: row 2 \(test sample 1\), column '0' is not a finite number"),
    Case("a -inf score", "neginf.csv", score_csv(_scores(cell=((1, 5), "-inf"))),
         r"score file FILE: row 2 \(test sample 1\), column '5' is not a finite number"),
    Case("an empty cell", "hole.csv", score_csv(_scores(cell=((0, 4), ""))),
         r"score file FILE: row 1 \(test sample 0\), column '4' is not a finite number"),
    Case("non-UTF-8", "latin1-scores.csv", score_csv(_scores()).replace(b"0.1", b"0\xe91", 1),
         r"score file FILE: not UTF-8"),
]
