"""Math word problems: every equation evaluates to its answer and uses the prompt's numbers."""

from __future__ import annotations

import ast
import operator
import re

import pytest

from engine.data.tasks import math_tasks
from engine.data.tasks.generators import build_task

RESPONSE = re.compile(r"^(.+) = (\d+)\.\nAnswer: (\d+)$")
OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def safe_eval(expr: str) -> float:
    """Evaluate + - * / over integer literals only (no names, calls or attributes)."""
    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in OPS:
            return OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        raise ValueError(f"unexpected syntax in {expr!r}: {ast.dump(node)}")
    return ev(ast.parse(expr, mode="eval"))


def test_safe_eval_rejects_code():
    with pytest.raises(ValueError):
        safe_eval("__import__('os')")


def test_ten_templates():
    assert len(math_tasks.TEMPLATES) == 10
    task = build_task("math", n_train_per_label=2, n_test_per_label=1)
    assert task.labels == sorted(math_tasks.TEMPLATES)


def test_answers_are_correct():
    task = build_task("math", seed=11)
    for s in task.train + task.test:
        lhs, rhs, answer = RESPONSE.match(s.response).groups()
        assert rhs == answer
        assert safe_eval(lhs) == int(answer), s
        prompt_numbers = set(re.findall(r"\d+", s.prompt))
        assert set(re.findall(r"\d+", lhs)) <= prompt_numbers, s
