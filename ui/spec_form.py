"""The Jobs page's run-spec form, as data: which spec fields it offers, their values under a preset, and the spec
dict it sends — only what the user changed on top of the chosen preset, so a preset means what it says.

Method parameters come from their one declaration (``engine.catalog.methods``): every selected method gets its own
fields, and only values that differ from the method's defaults are sent (``scoring.params``). No torch here.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, fields
from typing import Any

from engine.catalog.methods import SHARED_PARAMS, method_info
from engine.spec.presets import PRESETS

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MODELS = ("tiny", "smollm2-135m")


@dataclass(frozen=True)
class FormField:
    """One form widget bound to a spec field (dotted ``path``). kind: int | float | choice | multi | text."""

    key: str
    path: str
    label: str
    kind: str
    options: tuple = ()
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None


# the fine-tune form, column by column (keys are widget keys: the tests and the URL-free state use them)
TASK_FIELDS = (
    FormField("f_ntrain", "task.n_train_per_label", "Training samples per label", "int", minimum=1, maximum=10000),
    FormField("f_ntest", "task.n_test_per_label", "Test samples per label", "int", minimum=1, maximum=1000),
)
TRAIN_FIELDS = (
    FormField("f_r", "lora.r", "LoRA rank r", "int", minimum=1, maximum=256),
    FormField("f_alpha", "lora.alpha", "LoRA alpha", "int", minimum=1, maximum=1024),
    FormField("f_targets", "lora.target_modules", "Target modules", "multi", TARGETS),
    FormField("f_epochs", "train.epochs", "Epochs", "int", minimum=1, maximum=100),
    FormField("f_batch", "train.batch_size", "Batch size", "int", minimum=1, maximum=512),
    FormField("f_lr", "train.lr", "Learning rate", "float", minimum=1e-7, maximum=1.0),
)
ENCODING_FIELDS = (
    FormField("f_maxlen", "train.max_length", "Max tokens per sample", "int", minimum=8, maximum=4096),
    FormField("f_losson", "train.loss_on", "Loss on", "choice", ("sequence", "response")),
)
SCORING_FIELDS = (
    FormField("f_ckpts", "scoring.checkpoints", "Score checkpoints", "choice", ("all", "last")),
    FormField("f_lambda", "scoring.lambda_c", "Damping λ_c", "float", minimum=1e-6, maximum=1e6,
              help="every damped method's lambda_l = mean(g^2) / lambda_c"),
)
RETRAIN_FIELDS = (
    FormField("f_single", "analysis.retrain_single", "Retrain: single samples removed", "int", minimum=0, maximum=100),
    FormField("f_labels", "analysis.retrain_labels", "Retrain: labels removed (0 = all)", "int", minimum=0,
              maximum=1000),
    FormField("f_random", "analysis.retrain_seeds", "Retrain: random subsets", "int", minimum=0, maximum=100),
)


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
