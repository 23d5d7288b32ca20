"""The user's own LoRA adapter and its checkpoints: find them, check them, attach them to the base model.

An adapter folder is what peft's ``save_pretrained`` writes: ``adapter_config.json`` and
``adapter_model.safetensors``. HF Trainer (and TRL) write intermediate ``checkpoint-<step>/`` folders of the
same form, often with a ``trainer_state.json`` whose ``log_history`` holds the learning rate per logged step.

Everything is checked before anything is loaded or written, with messages that name the folder or field:
a missing config or weights file, pickle weights (``adapter_model.bin``: never loaded), a non-LoRA or DoRA
adapter, checkpoints whose configuration or tensor shapes differ from the adapter's, a base model whose name or
layer shapes do not match, and LoRA layers other than ``nn.Linear`` (embeddings, convolutions), whose gradients
the engine's hooks would not see.

What is supported: any ``target_modules``, rank, ``lora_alpha``, rsLoRA scaling (peft applies it, the
gradient hooks see it), Conv1D base layers (GPT-2 style: the LoRA matrices are still linears). Trained bias
terms (``bias`` other than "none") and ``modules_to_save`` are loaded but held fixed: the scores are gradients
with respect to the LoRA matrices only (a manifest warning says so).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine.errors import InputError
from engine.model.lm_loss import check_attributable_lora

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
PICKLE_WEIGHTS = "adapter_model.bin"
TRAINER_STATE = "trainer_state.json"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
# configuration fields that must agree between an adapter and its checkpoints
_SAME = ("peft_type", "r", "lora_alpha", "use_rslora", "use_dora", "target_modules", "layers_to_transform", "bias")


@dataclass(frozen=True)
class AdapterFolder:
    """One adapter state on disk: its folder, config, training step (if known) and TracIn weight (if known)."""

    path: Path
    config: dict
    step: int | None = None
    lr: float | None = None  # mean learning rate over the steps since the previous checkpoint

    @property
    def label(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class UserAdapter:
    """The adapter and its checkpoints in training order (the adapter itself is the last state)."""

    states: tuple[AdapterFolder, ...]
    warnings: tuple[str, ...] = field(default=())

    @property
    def final(self) -> AdapterFolder:
        return self.states[-1]

    @property
    def config(self) -> dict:
        return self.final.config


# ---------------------------------------------------------------------------------------------- finding


def _read_config(folder: Path, role: str) -> dict:
    """The adapter_config.json of ``folder``, checked to be a LoRA adapter with safetensors weights."""
    if not folder.is_dir():
        raise InputError(f"{role} {folder} is not a folder")
    cfg_path = folder / CONFIG
    if not cfg_path.is_file():
        raise InputError(f"{role} {folder} has no {CONFIG}: it is not a peft adapter folder")
    if not (folder / WEIGHTS).is_file():
        if (folder / PICKLE_WEIGHTS).is_file():
            raise InputError(f"{role} {folder} holds its weights as {PICKLE_WEIGHTS}, a pickle file, which this tool "
                             f"never loads; save the adapter with safetensors (peft's save_pretrained does by "
                             f"default) to get {WEIGHTS}")
        raise InputError(f"{role} {folder} has no {WEIGHTS} (the adapter weights)")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{cfg_path} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise InputError(f"{cfg_path} must hold a JSON object")
    kind = str(cfg.get("peft_type", "")).upper()
    if kind != "LORA":
        raise InputError(f"{cfg_path}: peft_type is {cfg.get('peft_type')!r}; only LoRA adapters (peft_type LORA) "
                         "can be attributed")
    if cfg.get("use_dora"):
        raise InputError(f"{cfg_path}: use_dora is true; DoRA's weight normalisation is not a plain LoRA product, "
                         "so the per-sample LoRA gradients would be wrong; only plain LoRA is supported")
    return cfg


def checkpoint_folders(entries: tuple[str, ...] | list[str]) -> list[Path]:
    """Expand ``model.checkpoints``: a folder with ``checkpoint-<step>`` subfolders gives them in step order
    (HF Trainer's output folder); any other adapter folder stays as it is. Duplicates are dropped (first wins)."""
    out: list[Path] = []
    for i, entry in enumerate(entries):
        p = Path(entry).expanduser()
        if not p.is_dir():
            raise InputError(f"spec field 'model.checkpoints[{i}]': {p} is not a folder")
        # a Trainer output folder holds both the final adapter and checkpoint-<step>/: take the checkpoints
        subs = sorted((int(m.group(1)), c) for c in p.iterdir() if c.is_dir() and (m := _CKPT_RE.match(c.name)))
        if subs:
            out += [c for _, c in subs]
        elif (p / CONFIG).is_file():
            out.append(p)
        else:
            raise InputError(f"spec field 'model.checkpoints[{i}]': {p} is neither an adapter folder (no {CONFIG}) "
                             "nor a folder of checkpoint-<step> subfolders")
    seen, unique = set(), []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _step(folder: Path) -> int | None:
    m = _CKPT_RE.match(folder.name)
    if m:
        return int(m.group(1))
    state = _trainer_state(folder)
    return int(state["global_step"]) if isinstance(state.get("global_step"), int) else None


def _trainer_state(folder: Path) -> dict:
    try:
        state = json.loads((folder / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _logged_lrs(folders: list[Path]) -> dict[int, float]:
    """step -> learning rate from every trainer_state.json's log_history (later files win)."""
    out: dict[int, float] = {}
    for f in folders:
        for row in _trainer_state(f).get("log_history", []) or []:
            if isinstance(row, dict) and isinstance(row.get("step"), int) and isinstance(
                    row.get("learning_rate"), (int, float)):
                out[row["step"]] = float(row["learning_rate"])
    return out


def find_adapter(adapter: str, checkpoints: tuple[str, ...] = ()) -> UserAdapter:
    """The adapter and its checkpoints, in training order, checked against each other (nothing is loaded).

    The adapter is the last state; a checkpoint folder that is the adapter folder itself, or holds the same
    tensors, is not counted twice. TracIn weights: the mean logged learning rate over
    the steps since the previous checkpoint, from ``trainer_state.json`` (equal weights, with a warning, when no
    learning rates are logged).
    """
    final_path = Path(adapter).expanduser()
    final_cfg = _read_config(final_path, "model.adapter")
    folders = checkpoint_folders(checkpoints)
    cfgs = [_read_config(p, "checkpoint") for p in folders]
    for p, cfg in zip(folders, cfgs):
        for key in _SAME:
            if _norm(cfg.get(key)) != _norm(final_cfg.get(key)):
                raise InputError(f"checkpoint {p} is not a checkpoint of adapter {final_path}: its {CONFIG} has "
                                 f"{key} = {cfg.get(key)!r}, the adapter's is {final_cfg.get(key)!r}")
    # a checkpoint that is the adapter (same folder, or the same tensors: HF Trainer's final save of the last
    # checkpoint) is the adapter's own state: counted once, with that checkpoint's step
    final_tensors = _tensors(final_path)
    final_step = _step(final_path)
    kept = []
    for p, c in zip(folders, cfgs):
        if p.resolve() == final_path.resolve() or same_tensors(_tensors(p), final_tensors):
            final_step = final_step if final_step is not None else _step(p)
        else:
            kept.append((p, c))
    entries = [(p, c, _step(p)) for p, c in kept] + [(final_path, final_cfg, final_step)]
    known = [s for _, _, s in entries[:-1] if s is not None]
    if known != sorted(known):
        raise InputError("model.checkpoints are not in training order (steps " + ", ".join(map(str, known)) + ")")
    lrs = _logged_lrs([*folders, final_path])  # every log, also of a checkpoint that is the adapter itself
    window_lrs, prev = [], 0
    for _, _, s in entries:
        window = [lr for st, lr in sorted(lrs.items()) if s is not None and prev < st <= s]
        window_lrs.append(sum(window) / len(window) if window else None)
        prev = s if s is not None else prev
    warnings = []
    if all(lr is None for lr in window_lrs):
        if len(entries) > 1:
            warnings.append("no learning rates found in trainer_state.json: TracIn weights every checkpoint equally")
        window_lrs = [1.0] * len(entries)
    elif any(lr is None for lr in window_lrs):
        warnings.append("some checkpoints have no logged learning rate: TracIn uses the nearest earlier one")
        first = next(lr for lr in window_lrs if lr is not None)
        for i, lr in enumerate(window_lrs):
            window_lrs[i] = lr if lr is not None else (window_lrs[i - 1] if i else first)
    states = [AdapterFolder(p, c, s, lr) for (p, c, s), lr in zip(entries, window_lrs)]
    if final_cfg.get("bias", "none") != "none":
        warnings.append(f"adapter bias = {final_cfg.get('bias')!r}: the trained biases are loaded but held fixed; "
                        "scores are gradients w.r.t. the LoRA matrices only")
    if final_cfg.get("modules_to_save"):
        warnings.append(f"modules_to_save {final_cfg.get('modules_to_save')} are loaded but held fixed; scores are "
                        "gradients w.r.t. the LoRA matrices only")
    return UserAdapter(tuple(states), tuple(warnings))


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_state(AdapterFolder(folder, {}))


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Whether two state dicts hold the same names and bit-identical tensors."""
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


def _norm(v):
    return sorted(v) if isinstance(v, list) else v


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def adapter_digest(ua: UserAdapter) -> str:
    """sha256 over every state's weights file, for the manifest (the spec names folders, not contents)."""
    return hashlib.sha256("".join(_digest(a.path / WEIGHTS) for a in ua.states).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------- base model


def check_base_name(ua: UserAdapter, model_name: str) -> None:
    """The adapter's ``base_model_name_or_path`` must name ``model_name`` (same id or folder name)."""
    recorded = ua.config.get("base_model_name_or_path")
    if not recorded:
        return  # unknown: the shape check still applies
    a, b = str(recorded).rstrip("/"), str(model_name).rstrip("/")
    if a == b or Path(a).name.lower() == Path(b).name.lower():
        return
    raise InputError(f"adapter {ua.final.path} was trained on base model {recorded!r} ({CONFIG}: "
                     f"base_model_name_or_path) but model.name is {model_name!r}; give that base model")


def load_state(folder: AdapterFolder) -> dict[str, torch.Tensor]:
    """The adapter weights of one state (safetensors), keyed as peft's ``get_peft_model_state_dict``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(folder.path / WEIGHTS))
    except (SafetensorError, OSError) as e:
        raise InputError(f"{folder.path / WEIGHTS} cannot be read as safetensors: {e}") from None


def _lora_keys(state: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Size, torch.Size]]:
    """module path (as in the base model) -> (lora_A shape, lora_B shape); other LoRA tensors are an error."""
    out: dict[str, dict[str, torch.Size]] = {}
    for key, t in state.items():
        if ".lora_embedding_" in key:
            raise InputError(f"the adapter adapts an embedding ({key.split('.lora_embedding_')[0]}); only LoRA on "
                             "linear layers can be attributed (its per-sample gradients are what the methods read)")
        for part in ("lora_A", "lora_B"):
            marker = f".{part}."
            if marker in key:
                module = key.split(marker)[0].removeprefix("base_model.model.")
                out.setdefault(module, {})[part] = t.shape
    bad = [m for m, parts in out.items() if set(parts) != {"lora_A", "lora_B"}]
    if bad:
        raise InputError(f"adapter weights for {bad[0]} lack lora_A or lora_B")
    return {m: (p["lora_A"], p["lora_B"]) for m, p in out.items()}


def check_shapes(ua: UserAdapter, base) -> list[dict[str, torch.Tensor]]:
    """Load every state and check that its LoRA matrices fit ``base`` (before peft touches the model)."""
    modules = dict(base.named_modules())
    states = [load_state(a) for a in ua.states]
    reference = _lora_keys(states[-1])
    if not reference:
        raise InputError(f"{ua.final.path / WEIGHTS} holds no LoRA matrices (lora_A / lora_B tensors)")
    for name, (a_shape, b_shape) in reference.items():
        mod = modules.get(name)
        if mod is None:
            raise InputError(f"adapter {ua.final.path} adapts module {name!r}, which base model "
                             f"{type(base).__name__} does not have: is it the adapter of another model?")
        if isinstance(mod, torch.nn.Embedding):
            raise InputError(f"adapter adapts embedding {name}; only LoRA on linear layers can be attributed")
        fan_in = getattr(mod, "in_features", None)
        fan_out = getattr(mod, "out_features", None)
        if fan_in is None and hasattr(mod, "weight") and mod.weight.ndim == 2:  # transformers Conv1D: [in, out]
            fan_in, fan_out = mod.weight.shape
        if fan_in is None:
            raise InputError(f"adapter adapts {name}, a {type(mod).__name__}; only LoRA on linear layers can be "
                             "attributed")
        if len(a_shape) != 2 or len(b_shape) != 2 or a_shape[1] != fan_in or b_shape[0] != fan_out:
            raise InputError(f"adapter {ua.final.path} does not fit the base model: module {name} maps {fan_in} -> "
                             f"{fan_out} features, but the adapter's lora_A is {list(a_shape)} and lora_B "
                             f"{list(b_shape)}")
    for a, st in zip(ua.states[:-1], states[:-1]):
        if _lora_keys(st) != reference:
            raise InputError(f"checkpoint {a.path} has other LoRA matrices (names or shapes) than adapter "
                             f"{ua.final.path}")
    return states


def attach(base, ua: UserAdapter, seed: int):
    """Wrap ``base`` with a LoRA adapter of the user's configuration (weights initialised from ``seed``: they
    are replaced by a state before any use) and check every LoRA layer is a plain linear one."""
    from peft import PeftConfig, get_peft_model

    cfg = dict(ua.config)
    cfg["inference_mode"] = False
    try:
        config = PeftConfig.from_peft_type(**cfg)
    except (TypeError, ValueError) as e:
        raise InputError(f"{ua.final.path / CONFIG} is not a LoRA configuration peft can use: {e}") from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = get_peft_model(base, config)
        except ValueError as e:
            raise InputError(f"adapter {ua.final.path} does not fit the base model: {e}") from None
    check_attributable_lora(model, f"adapter {ua.final.path}")
    return model
