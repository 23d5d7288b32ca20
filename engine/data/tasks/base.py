"""The dataset contract every task generator and importer returns.

A task is two splits of (prompt, response) rows, labelled (every row has a class label) or not (every label is
None: the user's own data usually has none). Ids are positions: train ids are ``0..n_train-1``
and test ids ``0..n_test-1``, in the order the rows are stored, so a score matrix ``[n_test, n_train]`` is
indexed by them directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import InputError


@dataclass(frozen=True, slots=True)
class Sample:
    """One row. ``label`` is the class used as ground truth (the paper's ``variation``); None in an unlabelled
    dataset."""

    prompt: str
    response: str
    label: str | None = None


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
        """Sorted distinct labels over both splits ([] for an unlabelled dataset)."""
        return sorted({s.label for s in (*self.train, *self.test) if s.label is not None})

    @property
    def labelled(self) -> bool:
        """Whether the samples carry class labels (then every one does: :func:`check_task`)."""
        return any(s.label is not None for s in (*self.train, *self.test))


def check_task(task: TaskData) -> None:
    """Refuse data that attribution cannot be run or judged on: an empty split, labels on some rows only, test
    labels unseen in train."""
    if not task.train or not task.test:
        raise InputError(f"dataset {task.name!r}: the {'train' if not task.train else 'test'} split is empty")
    if not task.labelled:
        return
    for split, samples in (("train", task.train), ("test", task.test)):
        first = next((i for i, s in enumerate(samples) if s.label is None), None)
        if first is not None:
            raise InputError(f"dataset {task.name!r}: {split} sample {first} has no label, but others do; give a "
                             "label on every sample or on none")
    unseen = sorted({s.label for s in task.test} - {s.label for s in task.train})
    if unseen:
        raise InputError(f"dataset {task.name!r}: labels only in test: {', '.join(unseen)}")
