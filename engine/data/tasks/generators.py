"""The built-in tasks by name: :func:`build_task` and :data:`TASK_NAMES`.

Default sizes are the paper's. ``n_train_per_label`` / ``n_test_per_label`` scale a task down (CPU demos,
tests); what "per label" counts differs by task:

===================  ==================================  =====================================  ==============
task                 n_train_per_label (default)         n_test_per_label (default)             train / test
===================  ==================================  =====================================  ==============
grammars             rows per rule (90)                  rows per rule (10)                     900 / 100
math                 rows per template (90)              rows per template (10)                 900 / 100
emotion              rows per emotion (150)              rows per emotion (50)                  750 / 250
harmful_s/_m/_l      harmful rows (20); benign rows are  harmful test rows (40); the test split  40, 80, 260 / 40
                     1x, 3x, 12x that, keeping the mix   holds harmful rows only, as in the
                     ratio (20 + 20, 20 + 60, 20 + 240)  paper
backdoor             secret requests (350), each one     requests (50), likewise                700 / 100
                     clean + one triggered row
multi_backdoor       secret requests (175), each one     requests (25), likewise                700 / 100
                     clean + one row per trigger (3)
===================  ==================================  =====================================  ==============

The paper gives no multi-backdoor sizes; ours keep the single backdoor's totals (700 train, 100 test rows).
Each safety task also exists as ``<name>_easy`` (same sizes and labels): the first stand-ins, whose answers
are one templated line each (``engine.data.tasks.safety_easy``); the default names are the hard ones
(``engine.data.tasks.safety``: shared answer form and length, diverse benign data, disjoint test requests).
Generation is deterministic in ``seed`` (a private ``random.Random(seed)``, never the global state).
"""

from __future__ import annotations

import random
from typing import Callable

from engine.errors import InputError
from engine.data.tasks import emotion, grammars, math_tasks, safety, safety_easy
from engine.data.tasks.base import Sample, TaskData

Generator = Callable[[random.Random, int, int], tuple[list[Sample], list[Sample]]]

# name -> (generator, default n_train_per_label, default n_test_per_label, behaviour marker)
_TASKS: dict[str, tuple[Generator, int, int, str | None]] = {
    "grammars": (grammars.generate, 90, 10, None),
    "math": (math_tasks.generate, 90, 10, None),
    "emotion": (emotion.generate, 150, 50, None),
    "harmful_s": (safety.harmful_mix(1), 20, 40, safety.BEHAVIOUR),
    "harmful_m": (safety.harmful_mix(3), 20, 40, safety.BEHAVIOUR),
    "harmful_l": (safety.harmful_mix(12), 20, 40, safety.BEHAVIOUR),
    "backdoor": (safety.backdoor, 350, 50, safety.BEHAVIOUR),
    "multi_backdoor": (safety.multi_backdoor, 175, 25, safety.BEHAVIOUR),
    # the first, easy stand-ins (one templated line per answer), same sizes and labels
    "harmful_s_easy": (safety_easy.harmful_mix(1), 20, 40, safety.BEHAVIOUR),
    "harmful_m_easy": (safety_easy.harmful_mix(3), 20, 40, safety.BEHAVIOUR),
    "harmful_l_easy": (safety_easy.harmful_mix(12), 20, 40, safety.BEHAVIOUR),
    "backdoor_easy": (safety_easy.backdoor, 350, 50, safety.BEHAVIOUR),
    "multi_backdoor_easy": (safety_easy.multi_backdoor, 175, 25, safety.BEHAVIOUR),
}

TASK_NAMES: tuple[str, ...] = tuple(_TASKS)


def _size(value: int | None, default: int, field: str) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{field} must be a whole number >= 1 (or None for the paper's size), got {value!r}")
    return value


def build_task(
    name: str, seed: int = 0, n_train_per_label: int | None = None, n_test_per_label: int | None = None,
) -> TaskData:
    """Generate built-in task ``name``; None sizes mean the paper's (see the module docstring)."""
    if name not in _TASKS:
        raise InputError(f"unknown task {name!r}; valid tasks: {', '.join(TASK_NAMES)}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed must be a whole number, got {seed!r}")
    generate, default_train, default_test, behaviour = _TASKS[name]
    n_train = _size(n_train_per_label, default_train, "n_train_per_label")
    n_test = _size(n_test_per_label, default_test, "n_test_per_label")
    train, test = generate(random.Random(seed), n_train, n_test)
    return TaskData(name=name, train=tuple(train), test=tuple(test), behaviour=behaviour)
