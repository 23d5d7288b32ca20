"""Drawing distinct generated rows, shared by every built-in generator.

Generators compose rows from small vocabularies, so the same row can come up twice. Attribution is judged
on whether a test sample's top-ranked training samples share its label; a test row that is a verbatim copy
of a training row would make that trivially easy, so every generator draws all of a task's rows (train and
test) through one ``taken`` set of prompts.
"""

from __future__ import annotations

import random
from typing import Callable, TypeVar

from engine.errors import InputError
from engine.data.tasks.base import Sample

T = TypeVar("T")


def normalise(text: str) -> str:
    """Lower-cased, whitespace collapsed: two requests equal after this count as the same request."""
    return " ".join(text.lower().split())


def draw_distinct(
    rng: random.Random, make: Callable[[random.Random], T], key: Callable[[T], str], count: int,
    taken: set[str], what: str,
) -> list[T]:
    """Return ``count`` items from ``make(rng)`` whose ``key`` is not in ``taken``; adds the keys to ``taken``.

    Gives up (InputError) when the vocabulary cannot supply that many distinct items, so an oversized
    request fails clearly instead of looping forever.
    """
    items: list[T] = []
    attempts = 0
    max_attempts = 200 * count + 1000
    while len(items) < count:
        attempts += 1
        if attempts > max_attempts:
            raise InputError(
                f"cannot generate {count} distinct {what} (got {len(items)}); ask for fewer samples per label"
            )
        item = make(rng)
        k = key(item)
        if k not in taken:
            taken.add(k)
            items.append(item)
    return items


def split_per_label(
    rng: random.Random, makers: dict[str, Callable[[random.Random], Sample]], n_train: int, n_test: int,
) -> tuple[list[Sample], list[Sample]]:
    """``n_train`` + ``n_test`` samples per label from that label's maker, all prompts distinct across splits.

    Rows come out grouped by label, in the order of ``makers``.
    """
    taken: set[str] = set()
    train: list[Sample] = []
    test: list[Sample] = []
    for label, make in makers.items():
        rows = draw_distinct(rng, make, lambda s: s.prompt, n_train + n_test, taken, f"'{label}' rows")
        train += rows[:n_train]
        test += rows[n_train:]
    return train, test
