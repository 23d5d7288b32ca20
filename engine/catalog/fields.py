"""Frozen dataclasses from plain mappings (YAML, JSON, form values, keyword arguments), with errors naming the field.

One home for the rules every configuration object follows (run specs in :mod:`engine.spec.run_spec`, method parameters
in :mod:`engine.catalog.methods`): unknown names are refused (listing the valid ones), values are checked against the
field's type hint (``bool``, ``int``, ``float``, ``str``, ``X | None``, ``tuple[X, ...]``, ``dict[str, X]`` and
nested dataclasses), and the rules attached to a field with :func:`rule` (ranges, choices, list rules) are checked
too (:func:`check_rules`). Forms and the command line read the same metadata (:func:`field_at`; :func:`rules_of`
lists every rule-bearing field), so a field's rules are declared once, on the field. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from dataclasses import fields
from typing import Any

from engine.errors import InputError


def rule(*, positive: bool = False, minimum: float | None = None, maximum: float | None = None,
         below: float | None = None, choices: tuple | None = None, suggest: tuple | None = None, noun: str = "",
         nonempty: bool = False, unique: bool = False, help: str = "") -> dict:
    """Field metadata: ``dataclasses.field(default=..., metadata=rule(positive=True, help="..."))``.

    A number must be finite and: positive: > 0; minimum: >= that value; maximum: <= that value; below: < that value
    (with a lower bound the message names the interval, ``in [0, 1)``). choices: one of these. On a
    ``tuple[X, ...]`` field the number and choice rules hold for every entry (``path[i]``; with a ``noun`` an
    unknown entry reads "names unknown <noun> 'x'; valid: ..."); nonempty: at least one entry ("must name at least
    one <noun>"); unique: no entry twice. suggest: values a form or command line offers (not enforced: any other
    value is allowed too). help: one line for forms and docs.
    None passes every rule (for ``X | None`` fields None means "automatic").
    """
    return {"positive": positive, "minimum": minimum, "maximum": maximum, "below": below, "choices": choices,
            "suggest": suggest, "noun": noun, "nonempty": nonempty, "unique": unique, "help": help}



def offered(rule: typing.Mapping) -> tuple:
    """The values a form or the command line offers for a field with :func:`rule` metadata ``rule``: its choices,
    else its suggestions (empty when it has neither)."""
    return tuple(rule.get("choices") or rule.get("suggest") or ())


def check_rules(obj, where: str = "", label: str = "spec field") -> None:
    """Check the :func:`rule` metadata of every field of dataclass ``obj`` (and of the dataclasses it holds, in
    declaration order); raise InputError naming the field (``label 'where.name' must be ...``)."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        path = f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_rules(value, path, label)
        if value is None or not f.metadata:
            continue
        check_value(f.metadata, value, path, label)


def check_value(m: typing.Mapping, value, path: str, label: str = "spec field") -> None:
    """Check one field's ``value`` against its :func:`rule` metadata ``m``; InputError naming ``path``."""
    if isinstance(value, tuple):
        name = f"{label} '{path}'"
        if m.get("nonempty") and not value:
            raise InputError(f"{name} must name at least one {m.get('noun') or 'entry'}")
        for i, v in enumerate(value):
            if m.get("noun") and m.get("choices") is not None and v not in m["choices"]:
                raise InputError(f"{label} '{path}[{i}]' names unknown {m['noun']} {v!r}; "
                                 f"valid: {', '.join(map(str, m['choices']))}")
            _check_one(m, v, f"{label} '{path}[{i}]'")
        if m.get("unique") and len(set(value)) != len(value):
            raise InputError(f"{name} lists an entry twice: {list(value)}")
        return
    _check_one(m, value, f"{label} '{path}'")


def _check_one(m: typing.Mapping, value, name: str) -> None:
    if m.get("choices") is not None and value not in m["choices"]:
        raise InputError(f"{name} must be one of {', '.join(map(str, m['choices']))}, got {value!r}")
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return
    if not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    if m.get("below") is not None:
        _check_interval(m, value, name)
    if m.get("positive") and not value > 0:
        raise InputError(f"{name} must be positive, got {value!r}")
    if m.get("minimum") is not None and value < m["minimum"]:
        raise InputError(f"{name} must be >= {m['minimum']}, got {value!r}")
    if m.get("maximum") is not None and value > m["maximum"]:
        raise InputError(f"{name} must be <= {m['maximum']}, got {value!r}")


def _check_interval(m: typing.Mapping, value, name: str) -> None:
    """A rule with an exclusive upper bound ``below``: one message naming the whole interval (``in (0, 1)``)."""
    lo = 0 if m.get("positive") else m.get("minimum")
    inside = value < m["below"] and (lo is None or (value > lo if m.get("positive") else value >= lo))
    if not inside:
        what = f"< {m['below']}" if lo is None else f"in {'(' if m.get('positive') else '['}{lo}, {m['below']})"
        raise InputError(f"{name} must be {what}, got {value!r}")


def field_at(cls, path: str) -> tuple[dataclasses.Field, Any]:
    """The field of dataclass ``cls`` at dotted ``path`` (through nested dataclass fields) and its type hint;
    KeyError for an unknown path."""
    *parents, leaf = path.split(".")
    for name in parents:
        cls = typing.get_type_hints(cls)[name]
    by_name = {f.name: f for f in fields(cls)}
    if leaf not in by_name:
        raise KeyError(path)
    return by_name[leaf], typing.get_type_hints(cls)[leaf]


def rules_of(cls, where: str = "") -> dict[str, typing.Mapping]:
    """Every field of dataclass ``cls`` (nested dataclasses included) that carries :func:`rule` metadata:
    dotted path -> its rule, in declaration order."""
    out: dict[str, typing.Mapping] = {}
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        path = f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(rules_of(hints[f.name], path))
        elif f.metadata:
            out[path] = f.metadata
    return out


def build(cls, data: Any, where: str = "", label: str = "spec field"):
    """Build dataclass ``cls`` from a mapping, checking names and types; ``where`` prefixes field paths.

    ``label`` starts every error message (``"spec field 'train.lr' must be a number"``).
    """
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise InputError(f"{label} '{where or 'root'}' must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"{label} '{where + '.' if where else ''}{unknown[0]}' is unknown; "
                         f"valid fields here: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in data.items():
        path = f"{where}.{name}" if where else name
        kwargs[name] = coerce(hints[name], value, path, label)
    return cls(**kwargs)


def coerce(tp, value, path: str, label: str = "spec field"):
    """``value`` checked (and, for floats, widened) against type hint ``tp``; InputError naming ``path``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path, label)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(inner[0], value, path, label)
    if origin is dict:  # dict[str, X]: keys are names; X = Any keeps the values as given (checked elsewhere)
        if not isinstance(value, dict):
            raise InputError(f"{label} '{path}' must be a mapping, got {value!r}")
        key_t, val_t = args
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InputError(f"{label} '{path}' keys must be names, got {k!r}")
            out[k] = v if val_t is Any else coerce(val_t, v, f"{path}.{k}", label)
        return out
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{label} '{path}' must be a list, got {value!r}")
        return tuple(coerce(args[0], v, f"{path}[{i}]", label) for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise InputError(f"{label} '{path}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise InputError(f"{label} '{path}' must be an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads "1e-3" without a dot as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InputError(f"{label} '{path}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise InputError(f"{label} '{path}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported field type {tp} at {path}")
