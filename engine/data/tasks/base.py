"""The dataset contract every task generator and importer returns.

A task is two splits of labelled (prompt, response) rows. Ids are positions: train ids are ``0..n_train-1``
and test ids ``0..n_test-1``, in the order the rows are stored, so a score matrix ``[n_test, n_train]`` is
indexed by them directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import InputError


@dataclass(frozen=True, slots=True)
class Sample:
    """One row. ``label`` is the class used as ground truth (the paper's ``variation``)."""

    prompt: str
    response: str
    label: str


@dataclass(frozen=True)
class TaskData:
    """A named dataset: ``train`` and ``test`` tuples of samples.

    ``behaviour`` is an optional marker string whose presence in a greedy generation counts as showing the
    target behaviour (used by the behaviour-rate analysis); None where the task has no such behaviour.
    """

    name: str
    train: tuple[Sample, ...]
    test: tuple[Sample, ...]
    behaviour: str | None = None

    @property
    def labels(self) -> list[str]:
        """Sorted distinct labels over both splits."""
        return sorted({s.label for s in self.train} | {s.label for s in self.test})


def check_task(task: TaskData) -> None:
    """Refuse data that attribution cannot be judged on (empty split, test labels unseen in train)."""
    if not task.train or not task.test:
        raise InputError(f"dataset {task.name!r}: the {'train' if not task.train else 'test'} split is empty")
    unseen = sorted({s.label for s in task.test} - {s.label for s in task.train})
    if unseen:
        raise InputError(f"dataset {task.name!r}: labels only in test: {', '.join(unseen)}")
