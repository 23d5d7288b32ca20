"""The Jobs page's run-spec form, as data: which spec fields it offers, their values under a preset, and the spec
dict it sends — only what the user changed on top of the chosen preset, so a preset means what it says. Each
widget's options, bounds and help come from its spec field's rule (``engine.spec.run_spec``), declared once there.

Method parameters come from their one declaration (``engine.catalog.methods``): every selected method gets its own
fields, and only values that differ from the method's defaults are sent (``scoring.params``). No torch here.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass, fields
from typing import Any, Mapping

from engine.catalog.fields import field_at, offered
from engine.catalog.methods import SHARED_PARAMS, method_info
from engine.spec.presets import PRESETS
from engine.spec.run_spec import RunSpec, spec_rule


@dataclass(frozen=True)
class FormField:
    """One form widget bound to the spec field at dotted ``path``. Its kind, options, bounds and help are the spec
    field's own (its type and ``rule`` metadata in ``engine.spec.run_spec``), so the form offers what a spec
    accepts. kind: int | float | choice (one of the rule's choices, or of the values it suggests) | multi |
    text."""

    key: str
    path: str
    label: str

    @property
    def rule(self) -> Mapping[str, Any]:
        return spec_rule(self.path)

    @property
    def base_type(self) -> Any:
        """The field's type without ``| None`` (``tuple`` for ``tuple[X, ...]``)."""
        tp = field_at(RunSpec, self.path)[1]
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        return typing.get_origin(tp) or tp

    @property
    def kind(self) -> str:
        tp = self.base_type
        if tp is tuple:
            return "multi"
        return {int: "int", float: "float"}.get(tp) or ("choice" if self.options else "text")

    @property
    def options(self) -> tuple:
        return offered(self.rule)

    @property
    def minimum(self) -> float | None:
        """The rule's lower bound; for a positive rule the smallest integer above 0, or 0.0 for a float (0 itself
        is refused when the spec is validated)."""
        if self.rule.get("minimum") is not None:
            return self.rule["minimum"]
        if self.rule.get("positive"):
            return 1 if self.kind == "int" else 0.0
        return None

    @property
    def maximum(self) -> float | None:
        """The rule's upper bound (an exclusive bound ``below``: the largest integer under it, for an int)."""
        if self.rule.get("maximum") is not None:
            return self.rule["maximum"]
        below = self.rule.get("below")
        if below is None:
            return None
        return math.ceil(below) - 1 if self.kind == "int" else below

    @property
    def help(self) -> str:
        return self.rule.get("help", "")


# the fine-tune form, column by column (keys are widget keys: the tests and the URL-free state use them)
MODEL_FIELD = FormField("f_model", "model.name", "Base model")
DEVICE_FIELD = FormField("f_device", "device", "Device")
TASK_FIELDS = (
    FormField("f_ntrain", "task.n_train_per_label", "Training samples per label"),
    FormField("f_ntest", "task.n_test_per_label", "Test samples per label"),
)
TRAIN_FIELDS = (
    FormField("f_r", "lora.r", "LoRA rank r"),
    FormField("f_alpha", "lora.alpha", "LoRA alpha"),
    FormField("f_targets", "lora.target_modules", "Target modules"),
    FormField("f_epochs", "train.epochs", "Epochs"),
    FormField("f_batch", "train.batch_size", "Batch size"),
    FormField("f_lr", "train.lr", "Learning rate"),
)
ENCODING_FIELDS = (
    FormField("f_maxlen", "train.max_length", "Max tokens per sample"),
    FormField("f_losson", "train.loss_on", "Loss on"),
)
SCORING_FIELDS = (
    FormField("f_ckpts", "scoring.checkpoints", "Score checkpoints"),
    FormField("f_lambda", "scoring.lambda_c", "Damping λ_c"),
)
RETRAIN_FIELDS = (
    FormField("f_single", "analysis.retrain_single", "Retrain: single samples removed"),
    FormField("f_labels", "analysis.retrain_labels", "Retrain: labels removed (0 = all)"),
    FormField("f_random", "analysis.retrain_seeds", "Retrain: random subsets"),
)
FORM_FIELDS = (MODEL_FIELD, DEVICE_FIELD, *TASK_FIELDS, *TRAIN_FIELDS, *ENCODING_FIELDS, *SCORING_FIELDS,
               *RETRAIN_FIELDS)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and not key.endswith("scoring.params"):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def preset_values(preset: str) -> dict[str, Any]:
    """Every spec field of ``preset`` by dotted path (lists for tuples)."""
    return flatten(PRESETS[preset].to_dict())


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(b)))
    return a == b


def changes(values: dict[str, Any], preset: str) -> dict[str, Any]:
    """The nested spec dict of the ``values`` (path -> value) that differ from ``preset``'s."""
    base = preset_values(preset)
    out: dict[str, Any] = {}
    for path, value in values.items():
        if path in base and _same(value, base[path]):
            continue
        node = out
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = list(value) if isinstance(value, tuple) else value
    return out


# ---------------------------------------------------------------------------------------------- method parameters


@dataclass(frozen=True)
class ParamField:
    """One parameter of one method, as a form widget: kind int | float | bool | choice | text; optional = may be
    left empty (None: the method decides)."""

    method: str
    name: str
    kind: str
    default: Any
    optional: bool
    options: tuple = ()
    help: str = ""

    @property
    def key(self) -> str:
        return f"mp_{self.method}_{self.name}"


def param_fields(method: str) -> list[ParamField]:
    """The method's own parameters (not dtype/device, not the shared ones the form sets for all methods)."""
    info = method_info(method)
    hints = typing.get_type_hints(info.params)
    out = []
    for f in fields(info.params):
        if f.name in ("dtype", "device") or f.name in SHARED_PARAMS:
            continue
        tp = hints[f.name]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = type(None) in typing.get_args(tp)
        base = args[0] if args else tp
        choices = f.metadata.get("choices") if f.metadata else None
        kind = "choice" if choices else {int: "int", float: "float", bool: "bool"}.get(base, "text")
        out.append(ParamField(method, f.name, kind, f.default, optional, tuple(choices or ()),
                              (f.metadata or {}).get("help", "")))
    return out


def param_changes(values: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``scoring.params``: per method, the entered values that differ from the method's defaults."""
    out = {}
    for method, vals in values.items():
        defaults = method_info(method).defaults
        changed = {k: v for k, v in vals.items() if not _same(v, defaults[k])}
        if changed:
            out[method] = changed
    return out
