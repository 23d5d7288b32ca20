"""The adapter of a run: the peft model it lives in (:class:`LoadedModel`, :func:`load_model`) and its states in
training order (:class:`AdapterStates`: fine-tuned here, a state per epoch, or the user's checkpoints), written
into the run folder as peft adapter folders (:func:`write_checkpoints`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from engine.data.encoding import Encoded
from engine.errors import InputError
from engine.model import adapters
from engine.model.adapters import UserAdapter
from engine.model.base import check_quantized, load_base, resolve_device
from engine.model.finetune import add_lora, finetune, lora_state
from engine.runfolder.runformat import CHECKPOINTS_DIR
from engine.runfolder.writer import RunWriter
from engine.spec.run_spec import RunSpec

if TYPE_CHECKING:  # the tokenizer's type only: importing transformers costs a second
    from transformers import PreTrainedTokenizerBase


@dataclass
class LoadedModel:
    """The peft model on its device, its tokenizer, and (for a given adapter) what was found on disk.

    user: the user's adapter or None; user_states: its states' tensors in training order, already checked against
    the model.
    """

    model: torch.nn.Module  # a peft PeftModel
    tok: PreTrainedTokenizerBase
    device: torch.device
    user: UserAdapter | None = None
    user_states: list[dict[str, torch.Tensor]] = field(default_factory=list)

    @property
    def scaling(self) -> float:
        """peft's LoRA scaling of the first adapted module (alpha / r, or alpha / sqrt(r) with rsLoRA): the merged
        update is ``scaling * B @ A``."""
        for mod in self.model.modules():
            scaling = getattr(mod, "scaling", None)
            if isinstance(scaling, dict) and "default" in scaling:
                return float(scaling["default"])
        cfg = self.model.peft_config["default"]
        return float(cfg.lora_alpha) / float(cfg.r)


def load_model(spec: RunSpec, device: torch.device | None = None) -> LoadedModel:
    """The base model with a LoRA adapter: a fresh one (``spec.lora``, initialised from ``train.seed``) or, with
    ``model.adapter``, the user's (checked before anything else happens; see ``engine.model.adapters``).
    ``device``: where the model goes (a torchrun rank's own device); default: the spec's ``device`` rule."""
    device = device if device is not None else resolve_device(spec.device)
    dtype = torch.bfloat16 if spec.dtype == "bfloat16" else torch.float32
    load_in = spec.model.load_in
    if load_in != "none":  # before anything is read: a quantized base needs CUDA and bitsandbytes
        check_quantized(load_in, device)
    user = adapters.find_adapter(spec.model.adapter, spec.model.checkpoints) if spec.model.adapter else None
    if user is not None:
        adapters.check_base_name(user, spec.model.name)
    model, tok = load_base(spec.model.name, trust_remote_code=spec.model.trust_remote_code, dtype=dtype,
                           load_in=load_in, device=device)
    if user is None:
        return LoadedModel(_placed(add_lora(model, spec.lora, seed=spec.train.seed), load_in, device), tok, device)
    states = adapters.check_shapes(user, model)
    model = _placed(adapters.attach(model, user, seed=spec.train.seed), load_in, device)
    return LoadedModel(model, tok, device, user, states)


def _placed(model: torch.nn.Module, load_in: str, device: torch.device) -> torch.nn.Module:
    """The peft model on ``device``. A quantized base is already there (bitsandbytes placed it while loading, and
    its packed weights are not moved again); its LoRA matrices are made float32, so that fine-tuning updates and the
    per-sample gradients are float32 whatever the compute dtype."""
    if load_in == "none":
        return model.to(device)
    for name, p in model.named_parameters():
        if ".lora_" in name:
            p.data = p.data.to(device=device, dtype=torch.float32)
    return model


# ---------------------------------------------------------------------------------------------- adapter states


@dataclass
class AdapterStates:
    """The adapter's states in training order: checkpoint c (1-based) is ``states[c - 1]``.

    initial: checkpoint 0, the LoRA initialisation (B = 0, so the model computes the base model's outputs);
    weights: TracIn's learning-rate weight per checkpoint; sources: where each state came from (``epoch-<e>`` of
    our fine-tuning, or the user's folder); steps: training step at each checkpoint (None if unknown);
    losses: fine-tuning loss rows (epoch, step, loss), empty for a given adapter.
    """

    initial: dict[str, torch.Tensor]
    states: list[dict[str, torch.Tensor]]
    weights: list[float]
    sources: list[str]
    steps: list[int | None]
    losses: list[tuple[int, int, float]] = field(default_factory=list)

    def scored(self, which: str) -> list[int]:
        """The checkpoints ``scoring.checkpoints`` names: "all" -> 1..C, "last" -> [C]."""
        n = len(self.states)
        return list(range(1, n + 1)) if which == "all" else [n]

    def info(self) -> list[dict]:
        """Per checkpoint: index, source, step, TracIn weight (for the manifest)."""
        return [{"checkpoint": c, "source": src, "step": st, "lr_weight": w}
                for c, (src, st, w) in enumerate(zip(self.sources, self.steps, self.weights), start=1)]


def adapter_states(spec: RunSpec, lm: LoadedModel, train: list[Encoded], progress: bool) -> AdapterStates:
    """Fine-tune a fresh adapter (a state per epoch), or take the user's states as they are."""
    if lm.user is None:
        result = finetune(lm.model, train, lm.tok.pad_token_id, spec.train, lm.device, progress=progress)
        steps_per_epoch = -(-len(train) // spec.train.batch_size)
        n = len(result.epochs)
        return AdapterStates(result.initial, result.epochs, [result.epoch_lr(c) for c in range(1, n + 1)],
                             [f"epoch-{e}" for e in range(1, n + 1)], [e * steps_per_epoch for e in range(1, n + 1)],
                             result.losses)
    initial = lora_state(lm.model)  # the seeded peft initialisation: B = 0
    return AdapterStates(initial, list(lm.user_states), [a.lr for a in lm.user.states],
                         [str(a.path) for a in lm.user.states], [a.step for a in lm.user.states])


def write_checkpoints(writer: RunWriter, states: AdapterStates, lm: LoadedModel) -> None:
    """Every state as a peft adapter folder ``checkpoints/epoch-<c>/`` (c = 0 is the initialisation; for a given
    adapter, c counts its checkpoints), so the run folder is self-contained."""
    adapter_cfg = json.dumps(lm.model.peft_config["default"].to_dict(), default=list, indent=1)
    for c, state in enumerate([states.initial, *states.states]):
        folder = writer.path(f"{CHECKPOINTS_DIR}/epoch-{c}")
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "adapter_model.safetensors"))
        (folder / "adapter_config.json").write_text(adapter_cfg, encoding="utf-8")


def checkpoint_state(run_folder, c: int) -> dict[str, torch.Tensor]:
    """The adapter state of checkpoint ``c`` as :func:`write_checkpoints` kept it in a run folder; InputError
    naming the file when it is missing."""
    path = Path(run_folder) / CHECKPOINTS_DIR / f"epoch-{c}" / "adapter_model.safetensors"
    if not path.is_file():
        raise InputError(f"run {Path(run_folder).name!r}: the adapter state of checkpoint {c} is missing ({path})")
    return load_file(str(path))
