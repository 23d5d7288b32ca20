"""Field rules (``engine.catalog.fields.rule``): the one mechanism behind method parameters and run-spec fields.
Numbers, intervals, choices and list rules are checked with messages naming the field; forms and the command line
find a field's rule by its dotted path."""

from dataclasses import dataclass, field

import pytest

from engine.catalog.fields import check_rules, field_at, rule, rules_of
from engine.errors import InputError


@dataclass(frozen=True)
class Inner:
    share: float = field(default=0.5, metadata=rule(positive=True, below=1))
    rate: float = field(default=0.0, metadata=rule(minimum=0, below=1))
    cap: float = field(default=0.5, metadata=rule(below=1))
    steps: tuple[int, ...] = field(default=(1, 2), metadata=rule(minimum=0))


@dataclass(frozen=True)
class Outer:
    mode: str = field(default="a", metadata=rule(choices=("a", "b"), help="which mode"))
    names: tuple[str, ...] = field(default=("x",), metadata=rule(choices=("x", "y"), noun="name", nonempty=True,
                                                                 unique=True))
    model: str = field(default="m", metadata=rule(suggest=("m", "n")))
    count: int | None = field(default=None, metadata=rule(positive=True))
    b: float = field(default=0.5, metadata=rule(minimum=0.0, maximum=1.0))
    plain: int = -5
    inner: Inner = field(default_factory=Inner)


def _check(**changes):
    inner = {k[6:]: changes.pop(k) for k in list(changes) if k.startswith("inner_")}
    check_rules(Outer(**changes, inner=Inner(**inner)))


def test_defaults_and_none_pass():
    check_rules(Outer())
    _check(count=None, model="anything: suggestions are not enforced")


@pytest.mark.parametrize("changes, message", [
    ({"mode": "c"}, "spec field 'mode' must be one of a, b, got 'c'"),
    ({"names": ()}, "spec field 'names' must name at least one name"),
    ({"names": ("x", "z")}, r"spec field 'names\[1\]' names unknown name 'z'; valid: x, y"),
    ({"names": ("x", "x")}, r"spec field 'names' lists an entry twice: \['x', 'x'\]"),
    ({"count": 0}, "spec field 'count' must be positive, got 0"),
    ({"b": -0.1}, "spec field 'b' must be >= 0.0, got -0.1"),
    ({"b": 1.5}, "spec field 'b' must be <= 1.0, got 1.5"),
    ({"b": float("nan")}, "spec field 'b' must be a finite number"),
    ({"inner_share": 0.0}, r"spec field 'inner.share' must be in \(0, 1\), got 0.0"),
    ({"inner_share": 1.0}, r"spec field 'inner.share' must be in \(0, 1\), got 1.0"),
    ({"inner_rate": 1.0}, r"spec field 'inner.rate' must be in \[0, 1\), got 1.0"),
    ({"inner_rate": -0.5}, r"spec field 'inner.rate' must be in \[0, 1\), got -0.5"),
    ({"inner_cap": 2.0}, "spec field 'inner.cap' must be < 1, got 2.0"),
    ({"inner_steps": (1, -1)}, r"spec field 'inner.steps\[1\]' must be >= 0, got -1"),
])
def test_bad_values_are_named(changes, message):
    with pytest.raises(InputError, match=message):
        _check(**changes)


def test_interval_ends_that_are_inside_pass():
    _check(inner_rate=0.0, inner_share=0.999, inner_cap=-3.0, b=1.0, names=("y", "x"))


def test_the_label_and_prefix_start_the_message():
    with pytest.raises(InputError, match="^method 'm' parameter 'p.count' must be positive"):
        check_rules(Outer(count=-1), "p", label="method 'm' parameter")


def test_field_at_and_rules_of_find_rules_by_path():
    f, tp = field_at(Outer, "inner.share")
    assert f.metadata["below"] == 1 and f.metadata["positive"] and tp is float
    assert field_at(Outer, "mode")[0].metadata["help"] == "which mode"
    with pytest.raises(KeyError):
        field_at(Outer, "inner.nothing")
    rules = rules_of(Outer)
    assert list(rules) == ["mode", "names", "model", "count", "b", "inner.share", "inner.rate", "inner.cap",
                           "inner.steps"]  # declaration order; fields without rules are left out
    assert rules["model"]["suggest"] == ("m", "n") and rules["model"]["choices"] is None
