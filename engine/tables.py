"""The run-folder tables a run writes, built from its results (columns and types: :mod:`engine.runformat`).

Shared by the pipeline and the score importer: samples, long-form score blocks, the fine-tuning loss, and the
metric tables (:class:`Evaluation`, filled checkpoint by checkpoint and method by method).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from engine import metrics
from engine.runformat import TABLES, table
from engine.tasks.base import TaskData


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
    """Metric rows for one run, filled checkpoint by checkpoint and method by method."""

    train_labels: list[str]
    test_labels: list[str]
    k: int

    def __post_init__(self):
        self.metrics: list[dict] = []
        self.per_label: list[dict] = []
        self.agreement: list[dict] = []
        self.test_agreement: dict[str, list] = {c: [] for c in TABLES["test_agreement"].columns}  # columns

    def add(self, method: str, checkpoint: int, S: np.ndarray) -> dict:
        row, labels = metrics.summarize_with_labels(S, self.train_labels, self.test_labels, k=self.k)
        self.metrics.append({"method": method, "checkpoint": checkpoint, **row})
        for r in labels:
            self.per_label.append({"method": method, "checkpoint": checkpoint, "k": self.k, **r})
        return row

    def add_agreement(self, checkpoint: int, matrices) -> None:
        """Every pair of methods; ``matrices`` maps name -> score matrix (a dict, or a :class:`ScoreMatrices`
        that reads them from the score files one at a time)."""
        for a, b in itertools.combinations(sorted(matrices), 2):
            ag = metrics.agreement(matrices[a], matrices[b], k=self.k)
            self.agreement.append({"checkpoint": checkpoint, "method_a": a, "method_b": b, "k": self.k,
                                   "spearman": float(ag["spearman"]), "overlap": float(ag["overlap"])})
            n = len(ag["spearman_per_test"])  # one row per test sample: what the Compare page lists
            for column, values in (("checkpoint", [checkpoint] * n), ("method_a", [a] * n), ("method_b", [b] * n),
                                   ("k", [self.k] * n), ("test_id", range(n)),
                                   ("spearman", ag["spearman_per_test"]), ("overlap", ag["overlap_per_test"])):
                self.test_agreement[column].extend(values)

    def write(self, writer) -> None:
        writer.write_table("metrics.parquet", table("metrics", self.metrics))
        writer.write_table("label_metrics.parquet", table("label_metrics", self.per_label))
        writer.write_table("agreement.parquet", table("agreement", self.agreement))
        writer.write_table("test_agreement.parquet", table("test_agreement", **self.test_agreement))


class ScoreMatrices:
    """The score matrices [n_test, n_train] (float32: the stored values) of one checkpoint, read from a run
    folder's score files on demand and kept while their total stays under ``budget`` bytes — so metrics and
    method agreement are computed from exactly what the store will see, without holding every method at once."""

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
        import pyarrow.parquet as pq

        from engine.runformat import SCORES_DIR

        files = sorted(str(p) for p in (self.folder / SCORES_DIR).glob(f"{method}-ckpt{self.checkpoint}-*.parquet"))
        t = pq.read_table(files, columns=["test_id", "train_id", "score"])
        S = np.full(self.shape, np.nan, dtype=np.float32)
        S[t.column("test_id").to_numpy(), t.column("train_id").to_numpy()] = t.column("score").to_numpy()
        if sum(x.nbytes for x in self.kept.values()) + S.nbytes <= self.budget:
            self.kept[method] = S
        return S
