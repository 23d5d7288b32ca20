"""Frozen dataclasses from plain mappings (YAML, JSON, form values, keyword arguments), with errors naming the field.

One home for the rules every configuration object follows (run specs in :mod:`engine.spec.run_spec`, method parameters
in :mod:`engine.catalog.methods`): unknown names are refused (listing the valid ones), values are checked against the
field's type hint (``bool``, ``int``, ``float``, ``str``, ``X | None``, ``tuple[X, ...]``, ``dict[str, X]`` and
nested dataclasses), and range rules attached to a field with :func:`rule` are checked too. Nothing here imports torch.
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


def rule(*, positive: bool = False, minimum: float | None = None, choices: tuple | None = None,
         help: str = "", maximum: float | None = None) -> dict:
    """Field metadata: ``dataclasses.field(default=..., metadata=rule(positive=True, help="..."))``.

    positive: > 0; minimum: >= that value; maximum: <= that value; choices: one of these; help: one line for
    forms and docs.
    None passes every rule (for ``X | None`` fields None means "automatic").
    """
    return {"positive": positive, "minimum": minimum, "maximum": maximum, "choices": choices, "help": help}


def check_rules(obj, where: str = "", label: str = "spec field") -> None:
    """Check the :func:`rule` metadata of every field of dataclass ``obj``; raise InputError naming the field
    (``label 'where.name' must be ...``)."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if value is None or not f.metadata:
            continue
        path = f"{where}.{f.name}" if where else f.name
        name = f"{label} '{path}'"
        m = f.metadata
        if m.get("choices") is not None and value not in m["choices"]:
            raise InputError(f"{name} must be one of {', '.join(map(str, m['choices']))}, got {value!r}")
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise InputError(f"{name} must be a finite number, got {value!r}")
            if m.get("positive") and not value > 0:
                raise InputError(f"{name} must be positive, got {value!r}")
            if m.get("minimum") is not None and value < m["minimum"]:
                raise InputError(f"{name} must be >= {m['minimum']}, got {value!r}")
            if m.get("maximum") is not None and value > m["maximum"]:
                raise InputError(f"{name} must be <= {m['maximum']}, got {value!r}")


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
