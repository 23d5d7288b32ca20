"""The math word-problem class-attribution task: ten templates filled with random numbers.

The response is ``<equation>.\\nAnswer: <n>`` (for example ``12 * 4 = 48.\\nAnswer: 48``) and the class label
is the template's name. Every number the equation uses appears in the prompt, and every answer is a whole
number, so a row can be checked by evaluating its equation.
"""

from __future__ import annotations

import random
from typing import Callable

from engine.data.tasks.base import Sample
from engine.data.tasks.sampling import split_per_label

NAMES = ("Anna", "Ben", "Carla", "David", "Emma", "Felix", "Grace", "Hugo", "Iris", "Jonas", "Lena", "Omar")
ITEMS = ("apples", "pencils", "stickers", "marbles", "cookies", "books", "shells", "stamps", "cards", "eggs")

# A template draws numbers and returns (prompt, left-hand side of the equation, answer).
Problem = tuple[str, str, int]


def _addition(r: random.Random) -> Problem:
    name, item, a, b = r.choice(NAMES), r.choice(ITEMS), r.randint(2, 99), r.randint(2, 99)
    return f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?", f"{a} + {b}", a + b


def _subtraction(r: random.Random) -> Problem:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    a = r.randint(20, 150)
    b = r.randint(1, a - 1)
    return f"{name} had {a} {item} and gave away {b}. How many {item} are left?", f"{a} - {b}", a - b


def _boxes(r: random.Random) -> Problem:
    item, a, b = r.choice(ITEMS), r.randint(2, 20), r.randint(2, 25)
    prompt = f"There are {a} boxes with {b} {item} in each box. How many {item} are there in total?"
    return prompt, f"{a} * {b}", a * b


def _sharing(r: random.Random) -> Problem:
    name, item, each, friends = r.choice(NAMES), r.choice(ITEMS), r.randint(2, 20), r.randint(2, 12)
    total = each * friends
    prompt = f"{name} shares {total} {item} equally among {friends} friends. How many {item} does each friend get?"
    return prompt, f"{total} / {friends}", each


def _distance(r: random.Random) -> Problem:
    speed, hours = r.randint(30, 120), r.randint(2, 9)
    prompt = f"A car travels at {speed} km per hour for {hours} hours. How many km does it travel?"
    return prompt, f"{speed} * {hours}", speed * hours


def _rectangle_area(r: random.Random) -> Problem:
    a, b = r.randint(2, 40), r.randint(2, 40)
    return f"A garden is {a} m long and {b} m wide. What is its area in square meters?", f"{a} * {b}", a * b


def _triangle_perimeter(r: random.Random) -> Problem:
    a, b = r.randint(3, 30), r.randint(3, 30)
    c = r.randint(abs(a - b) + 1, a + b - 1)
    prompt = f"A triangle has sides of {a} cm, {b} cm and {c} cm. What is its perimeter in cm?"
    return prompt, f"{a} + {b} + {c}", a + b + c


def _change(r: random.Random) -> Problem:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    count, price = r.randint(2, 9), r.randint(1, 9)
    paid = r.choice([p for p in (20, 50, 100) if p > count * price])
    prompt = (f"{name} buys {count} {item} at {price} dollars each and pays with a {paid} dollar bill. "
              f"How much change does {name} get?")
    return prompt, f"{paid} - {count} * {price}", paid - count * price


def _age(r: random.Random) -> Problem:
    child, parent = r.sample(NAMES, 2)
    age, times = r.randint(3, 15), r.randint(2, 5)
    prompt = f"{child} is {age} years old. {parent} is {times} times as old as {child}. How old is {parent}?"
    return prompt, f"{age} * {times}", age * times


def _average(r: random.Random) -> Problem:
    name = r.choice(NAMES)
    a, b = r.randint(5, 60), r.randint(5, 60)
    c = r.choice([x for x in range(5, 61) if (a + b + x) % 3 == 0])
    prompt = f"{name} scored {a}, {b} and {c} points in 3 games. What is the average score per game?"
    return prompt, f"({a} + {b} + {c}) / 3", (a + b + c) // 3


TEMPLATES: dict[str, Callable[[random.Random], Problem]] = {
    "addition": _addition,
    "subtraction": _subtraction,
    "boxes": _boxes,
    "sharing": _sharing,
    "distance": _distance,
    "rectangle_area": _rectangle_area,
    "triangle_perimeter": _triangle_perimeter,
    "change": _change,
    "age": _age,
    "average": _average,
}


def _maker(label: str, template: Callable[[random.Random], Problem]) -> Callable[[random.Random], Sample]:
    def make(r: random.Random) -> Sample:
        prompt, lhs, answer = template(r)
        return Sample(prompt, f"{lhs} = {answer}.\nAnswer: {answer}", label)
    return make


def generate(rng: random.Random, n_train: int, n_test: int) -> tuple[list[Sample], list[Sample]]:
    """``n_train`` + ``n_test`` rows per template, all prompts distinct across both splits."""
    return split_per_label(rng, {k: _maker(k, t) for k, t in TEMPLATES.items()}, n_train, n_test)
