"""The physical layout of score files for per-prompt reads (format: :mod:`engine.runfolder.runformat`, "Score files").

The pipeline writes one score file per (method, checkpoint, training shard), each holding every test prompt
(test-major). The store reads score files in place, and one prompt's full row from S shard files costs S file
opens (measured ~3 ms each on a loaded 2-core machine: 49 shards of a 100k-sample run already miss a 100 ms
budget). So at commit :func:`merge_score_shards` rewrites a method's shards at one checkpoint into ONE file
sorted by (test_id, train_id) whose row groups hold whole prompts (``runformat.scores_rows_per_group``).

Bounded memory: the shards are read in lockstep, a block of prompts at a time (about one output row group,
``SCORES_ROW_GROUP_ROWS`` rows, from all shards together), with buffered page reads; nothing holds a whole
matrix. A group whose shards are not the layout the writer promises (prompts missing, train ids that differ
between prompts) is left as it is, with a warning: readers accept any layout.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.runfolder.runformat import SCORES_DIR, scores_file, scores_rows_per_group, table

log = logging.getLogger(__name__)

SHARD_RE = re.compile(rf"^{SCORES_DIR}/(?P<method>.+)-ckpt(?P<ckpt>\d+)-shard(?P<shard>\d+)\.parquet$")
_READ_BUFFERS = 16 << 20  # bytes of page buffers over all the shards read in lockstep (3 columns each)
_MIN_READ_BUFFER = 64 << 10  # ... but at least this much per column: a 1M-sample run has ~500 shards


class NotMergeable(Exception):
    """The shards of a group do not have the layout a merge assumes; the message says what differs."""


def write_options(n_per_test: int) -> dict:
    """``pyarrow.parquet`` writer options of a score file with ``n_per_test`` rows per test prompt: row groups of
    whole prompts; dictionary encoding only for the method name (a dictionary attempt on float scores is wasted
    work); delta encoding for the ids, which run in steps of one (a merged 1000 x 100k file: 372 MB instead of
    622 MB with plain ids, read as fast)."""
    return {"compression": "zstd", "use_dictionary": ["method"], "row_group_size": scores_rows_per_group(n_per_test),
            "column_encoding": {"test_id": "DELTA_BINARY_PACKED", "train_id": "DELTA_BINARY_PACKED"}}


def merge_score_shards(folder: Path, files: dict[str, int]) -> dict[str, int]:
    """Merge the shard files (``<method>-ckpt<c>-shard<s>.parquet``) listed in ``files`` (relative path -> rows)
    under ``folder`` into one ``<method>-ckpt<c>.parquet`` per (method, checkpoint); return the new listing.
    The shard files are deleted once their merged file is complete."""
    groups: dict[tuple[str, int], list[str]] = {}
    for rel in files:
        m = SHARD_RE.match(rel)
        if m:
            groups.setdefault((m["method"], int(m["ckpt"])), []).append(rel)
    out = dict(files)
    for (method, ckpt), rels in sorted(groups.items()):
        target = scores_file(method, ckpt)
        if target in files:  # a merged file of that name exists already: not ours to replace
            continue
        part = Path(folder) / (target + ".part")
        try:
            n = _merge([Path(folder) / r for r in rels], part, method, ckpt)
        except NotMergeable as e:
            part.unlink(missing_ok=True)
            log.warning("score shards of %s at checkpoint %d left unmerged: %s", method, ckpt, e)
            continue
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        if n != sum(files[r] for r in rels):
            part.unlink(missing_ok=True)
            raise RuntimeError(f"merging the score shards of {method} at checkpoint {ckpt}: wrote {n} rows, the "
                               f"shards hold {sum(files[r] for r in rels)}")
        part.rename(Path(folder) / target)
        for r in rels:
            (Path(folder) / r).unlink()
            del out[r]
        out[target] = n
    return dict(sorted(out.items()))


class _Rows:
    """Sequential reader of one shard's (test_id, train_id, score) that hands out exactly ``n`` rows at a time."""

    def __init__(self, path: Path, batch: int, buffer: int):
        self.file = pq.ParquetFile(path, buffer_size=buffer)
        self.batches = self.file.iter_batches(batch_size=batch, columns=["test_id", "train_id", "score"])
        self.buf = pa.table({"test_id": pa.array([], pa.int32()), "train_id": pa.array([], pa.int32()),
                             "score": pa.array([], pa.float32())})

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        parts = [self.buf]
        have = self.buf.num_rows
        while have < n:
            try:
                b = next(self.batches)
            except StopIteration:
                raise NotMergeable(f"{self.file.metadata.num_rows} rows in a shard end before the last prompt")
            parts.append(pa.Table.from_batches([b]).cast(self.buf.schema))
            have += b.num_rows
        t = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        head, self.buf = t.slice(0, n), t.slice(n)
        return tuple(head.column(c).to_numpy() for c in ("test_id", "train_id", "score"))


def _id_range(f: pq.ParquetFile, column: str) -> tuple[int, int]:
    """min and max of an integer column from the row-group statistics (NotMergeable when absent)."""
    md, idx = f.metadata, f.schema_arrow.get_field_index(column)
    lo = hi = None
    for g in range(md.num_row_groups):
        st = md.row_group(g).column(idx).statistics
        if st is None or not st.has_min_max:
            raise NotMergeable(f"no {column} statistics")
        lo = st.min if lo is None else min(lo, st.min)
        hi = st.max if hi is None else max(hi, st.max)
    if lo is None:
        raise NotMergeable("an empty shard")
    return int(lo), int(hi)


def _merge(paths: list[Path], out: Path, method: str, ckpt: int) -> int:
    """Write the merged file of one (method, checkpoint) to ``out``; return its row count."""
    files = [pq.ParquetFile(p) for p in paths]
    ranges = {_id_range(f, "test_id") for f in files}
    if len(ranges) != 1:
        raise NotMergeable(f"shards cover different test ids {sorted(ranges)}")
    (t0, t1), = ranges
    n_test = t1 - t0 + 1
    widths = []
    for f in files:
        rows = f.metadata.num_rows
        if rows % n_test:
            raise NotMergeable(f"{rows} rows is not a whole number of rows for {n_test} prompts")
        widths.append(rows // n_test)
    n_train = sum(widths)
    per_block = max(1, scores_rows_per_group(n_train) // n_train)  # prompts per output row group
    buffer = max(_MIN_READ_BUFFER, _READ_BUFFERS // (3 * len(paths)))  # memory does not grow with the shards
    readers = [_Rows(p, per_block * w, buffer) for p, w in zip(paths, widths)]
    cols = perm = None
    written = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(out, table("scores", []).schema, **{k: v for k, v in write_options(n_train).items()
                                                                if k != "row_group_size"}) as w:
        for a in range(t0, t1 + 1, per_block):
            p = min(per_block, t1 + 1 - a)
            ids = np.arange(a, a + p, dtype=np.int32)
            scores, trains = [], []
            for r, width in zip(readers, widths):
                test_id, train_id, score = r.take(p * width)
                if not np.array_equal(test_id, np.repeat(ids, width)):
                    raise NotMergeable(f"rows of prompts {a}..{a + p - 1} are not test-major in one shard")
                train = train_id.reshape(p, width)
                if (train != train[:1]).any():
                    raise NotMergeable("a shard holds different training ids for different prompts")
                trains.append(train[0])
                scores.append(score.reshape(p, width))
            if cols is None:  # the column order, fixed by the first block: every later block must agree
                cols = np.concatenate(trains)
                perm = np.argsort(cols, kind="stable")
                cols = cols[perm]
                if (np.diff(cols) <= 0).any():
                    raise NotMergeable("a training id appears in two shards")
            elif not np.array_equal(np.concatenate(trains)[perm], cols):
                raise NotMergeable("the shards' training ids change between prompts")
            S = np.concatenate(scores, axis=1)[:, perm]
            block = table("scores", method=pa.repeat(method, S.size),
                          checkpoint=np.full(S.size, ckpt, np.int32), test_id=np.repeat(ids, n_train),
                          train_id=np.tile(cols, p), score=S.ravel())
            w.write_table(block, row_group_size=block.num_rows)
            written += block.num_rows
    return written
