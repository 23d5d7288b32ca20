"""Reading a run spec: from a dict (:func:`spec_from_dict`, a ``preset: NAME`` key starts from that preset) or a
YAML/JSON file (:func:`load_spec`); every error names the file and the field."""

from __future__ import annotations

from pathlib import Path

import yaml

from engine.catalog.analyses import ANALYSIS_CATALOG
from engine.catalog.fields import build
from engine.errors import InputError
from engine.spec.presets import PRESETS
from engine.spec.run_spec import RunSpec, validate


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def spec_from_dict(data: dict) -> RunSpec:
    """Build and validate a spec. A top-level ``preset: NAME`` key starts from that preset."""
    if not isinstance(data, dict):
        raise InputError("a spec must be a mapping at the top level")
    given = dict(data)
    preset = given.pop("preset", None)
    data = given
    if preset is not None:
        if preset not in PRESETS:
            raise InputError(f"spec field 'preset' must be one of {', '.join(PRESETS)}, got {preset!r}")
        data = _deep_merge(PRESETS[preset].to_dict(), given)
        adapter = isinstance(given.get("model"), dict) and given["model"].get("adapter")
        asked = isinstance(given.get("analysis"), dict) and "metagrad_prompts" in given["analysis"]
        if adapter and not asked:  # a preset's metagrad is for runs the engine fine-tunes (it replays the run)
            data["analysis"] = {**data.get("analysis", {}), "metagrad_prompts": 0}
    spec = validate(build(RunSpec, data, ""))
    # the user's own words, not a preset's: a preset's recipe is not how the user's adapter was trained
    retrains = [s for s in spec.analysis.stages if ANALYSIS_CATALOG[s].retrains]
    if spec.model.adapter and retrains and not _recipe_given(given):
        raise InputError(f"spec field 'analysis.stages' includes {retrains[0]}, which fine-tunes the adapter again with "
                         "samples removed: with model.adapter it needs the recipe the adapter was trained with. "
                         "Give a train block (at least epochs, batch_size and lr), or drop retrain")
    return spec


def _recipe_given(data: dict) -> bool:
    train = data.get("train") or {}
    return isinstance(train, dict) and {"epochs", "batch_size", "lr"} <= set(train)


def load_spec(path: str | Path) -> RunSpec:
    """Load a YAML (or JSON, which is YAML) spec file; errors name the file and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"spec file {path} does not exist") from None
    except UnicodeDecodeError as e:
        raise InputError(f"spec file {path} is not UTF-8 text (byte {e.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InputError(f"spec file {path} is not valid YAML: {e}") from None
    try:
        return spec_from_dict(data or {})
    except InputError as e:
        raise InputError(f"{path}: {e}") from None
