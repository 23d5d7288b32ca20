"""The run-folder tables a run writes, built from its results (columns and types: :mod:`engine.runfolder.runformat`).

Shared by the pipeline and the score importer: samples, long-form score blocks, the fine-tuning loss, and the
metric tables (:class:`Evaluation`, filled checkpoint by checkpoint and method by method).
"""

from __future__ import annotations

import itertools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.data.tasks.base import TaskData
from engine.evaluation import metrics
from engine.runfolder.runformat import SCORES_DIR, TABLES, table


def samples_table(task: TaskData) -> pa.Table:
    """samples.parquet: split, sample_id, prompt, response, label (train rows first, then test)."""
    rows = [("train", i, s) for i, s in enumerate(task.train)] + [("test", i, s) for i, s in enumerate(task.test)]
    return table("samples", split=[r[0] for r in rows], sample_id=[r[1] for r in rows],
                 prompt=[r[2].prompt for r in rows], response=[r[2].response for r in rows],
                 label=[r[2].label for r in rows])


def scores_table(method: str, checkpoint: int, S: np.ndarray, train_offset: int = 0) -> pa.Table:
    """Long form of a score block S [n_test, n_shard]: method, checkpoint, test_id, train_id, score (float32)."""
    m, n = S.shape
    return table("scores", method=pa.repeat(method, m * n),
                 checkpoint=np.full(m * n, checkpoint, np.int32),
                 test_id=np.repeat(np.arange(m, dtype=np.int32), n),
                 train_id=np.tile(np.arange(train_offset, train_offset + n, dtype=np.int32), m),
                 score=np.asarray(S, dtype=np.float32).ravel())


def loss_table(losses: list[tuple[int, int, float]]) -> pa.Table:
    """train_loss.parquet from (epoch, step, loss) tuples."""
    return table("train_loss", [{"epoch": e, "step": st, "loss": v} for e, st, v in losses])


@dataclass
class Evaluation:
    """Metric rows for one run, filled checkpoint by checkpoint and method by method. Without labels (an
    unlabelled dataset: every label None) the label metrics are None and there are no per-label rows; the method
    agreement needs none.

    :meth:`add` ranks each row of a method's matrix once; the average ranks go to a scratch file under
    ``workdir`` (a temporary folder; the system's when None) and the top-k sets stay in memory as bits, so
    :meth:`add_agreement` computes every pair of methods from those, a few rows at a time, without the score
    matrices: memory stays one matrix plus a few rows whatever the number of methods and n_train."""

    train_labels: list[str]
    test_labels: list[str]
    k: int
    workdir: str | None = None

    def __post_init__(self):
        self.metrics: list[dict] = []
        self.per_label: list[dict] = []
        self.agreement: list[dict] = []
        self.test_agreement: dict[str, list] = {c: [] for c in TABLES["test_agreement"].columns}  # columns
        self._ranked: dict[int, dict[str, tuple[metrics.RankedRows, Path, np.dtype]]] = {}
        self._scratch = None

    def add(self, method: str, checkpoint: int, S: np.ndarray) -> dict:
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="influence-ranks-", dir=self.workdir)
        path = Path(self._scratch.name) / f"{method}-ckpt{checkpoint}.ranks"
        dtypes = []
        with path.open("wb") as f:
            def spill(rows, ranks):  # chunks arrive in row order
                dtypes.append(ranks.dtype)
                f.write(np.ascontiguousarray(ranks).tobytes())

            labelled = metrics.has_labels(self.train_labels)
            ranked = metrics.rank_rows(S, self.k, *((np.asarray(self.train_labels), np.asarray(self.test_labels))
                                                    if labelled else ()), on_ranks=spill)
        self._ranked.setdefault(checkpoint, {})[method] = (ranked, path, dtypes[0])
        row = metrics.summary_of(ranked, self.train_labels, self.test_labels)
        self.metrics.append({"method": method, "checkpoint": checkpoint, **row})
        for r in metrics.per_label_of(ranked, self.test_labels) if labelled else ():
            self.per_label.append({"method": method, "checkpoint": checkpoint, "k": self.k, **r})
        return row

    def add_agreement(self, checkpoint: int) -> None:
        """Every pair of the methods added at ``checkpoint`` (:func:`engine.evaluation.metrics.agreement`'s values, from
        the ranks :meth:`add` kept); their scratch files are removed afterwards."""
        ranked = self._ranked.pop(checkpoint, {})
        names = sorted(ranked)
        if len(names) < 2:
            self._drop(ranked)
            return
        m, n = len(self.test_labels), len(self.train_labels)
        rhos = np.empty((m, len(names), len(names)))
        for rows in metrics.row_chunks(m, n * len(names)):
            block = np.stack([self._read_ranks(ranked[a], rows, n) for a in names])
            rhos[rows] = metrics.spearman_of_ranks(block, np.stack([ranked[a][0].spread[rows] for a in names]))
        self._drop(ranked)
        for (i, a), (j, b) in itertools.combinations(enumerate(names), 2):
            ag = metrics.agreement_summary(rhos[:, i, j], metrics.overlap_from_bits(
                ranked[a][0].topk_bits, ranked[b][0].topk_bits, self.k))
            self.agreement.append({"checkpoint": checkpoint, "method_a": a, "method_b": b, "k": self.k,
                                   "spearman": float(ag["spearman"]), "overlap": float(ag["overlap"])})
            for column, values in (("checkpoint", [checkpoint] * m), ("method_a", [a] * m), ("method_b", [b] * m),
                                   ("k", [self.k] * m), ("test_id", range(m)),  # the rows the Compare page lists
                                   ("spearman", ag["spearman_per_test"]), ("overlap", ag["overlap_per_test"])):
                self.test_agreement[column].extend(values)

    @staticmethod
    def _read_ranks(entry, rows: slice, n: int) -> np.ndarray:
        _, path, dtype = entry
        width = n * np.dtype(dtype).itemsize
        with path.open("rb") as f:
            f.seek(rows.start * width)
            return np.frombuffer(f.read((rows.stop - rows.start) * width), dtype=dtype).reshape(-1, n)

    @staticmethod
    def _drop(ranked: dict) -> None:
        for _, path, _ in ranked.values():
            path.unlink(missing_ok=True)

    def write(self, writer) -> None:
        writer.write_table("metrics.parquet", table("metrics", self.metrics))
        writer.write_table("label_metrics.parquet", table("label_metrics", self.per_label))
        writer.write_table("agreement.parquet", table("agreement", self.agreement))
        writer.write_table("test_agreement.parquet", table("test_agreement", **self.test_agreement))
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None


class ScoreMatrices:
    """The score matrices [n_test, n_train] (float32: the stored values) of one checkpoint, read from a run
    folder's score files on demand and kept while their total stays under ``budget`` bytes (each under a quarter
    of it) — so metrics and method agreement are computed from exactly what the store will see, without holding
    every method at once."""

    def __init__(self, folder, checkpoint: int, methods: list[str], n_test: int, n_train: int, budget: int):
        self.folder, self.checkpoint, self.methods = folder, checkpoint, list(methods)
        self.shape, self.budget = (n_test, n_train), budget
        self.kept: dict[str, np.ndarray] = {}

    def __iter__(self):
        return iter(self.methods)

    def __len__(self):
        return len(self.methods)

    def __contains__(self, name):
        return name in self.methods

    def items(self):
        return ((m, self[m]) for m in self.methods)

    def __getitem__(self, method: str) -> np.ndarray:
        if method in self.kept:
            return self.kept[method]
        files = sorted(str(p) for p in (self.folder / SCORES_DIR).glob(f"{method}-ckpt{self.checkpoint}-*.parquet"))
        S = np.full(self.shape, np.nan, dtype=np.float32)
        for file in files:  # one shard at a time: the only full-size array is S itself
            t = pq.read_table(file, columns=["test_id", "train_id", "score"])
            S[t.column("test_id").to_numpy(), t.column("train_id").to_numpy()] = t.column("score").to_numpy()
        # kept only while several fit: a matrix that alone fills the budget would be held through the rest of
        # the run (the stages after scoring keep this object) for little reuse
        if S.nbytes <= self.budget // 4 and sum(x.nbytes for x in self.kept.values()) + S.nbytes <= self.budget:
            self.kept[method] = S
        return S
