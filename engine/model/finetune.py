"""LoRA fine-tuning with peft: AdamW with linear decay (no warm-up), optional gradient-norm clipping, a checkpoint
(LoRA state) after every epoch.

A batch whose activations would not fit the memory budget goes through the model in parts whose gradients add up
(``train.micro_batch_size``, :func:`micro_batch_size`): the same step, up to float rounding.

The training objective is the mean over the batch of per-sample mean token losses
(``engine.model.lm_loss.batch_loss``), i.e. the empirical risk (1/n) Σ_i L(z_i) whose per-sample gradients
the attribution methods use. Attribution runs in eval mode (no dropout).

Data order and dropout are fixed per training sample, so that a retraining without some samples
(engine.analysis.retrain) differs from the original run only by their removal: the order of epoch e is one
permutation of the training set drawn from ``(seed, e)``, and LoRA dropout masks depend only on
(seed, epoch, sample id, module, position) (engine.model.dropout). A removal gives the removed samples weight 0
INSIDE the original batches (``weights``): the batch loss is ``(1/|batch|) sum_i w_i L(z_i)`` over the same
batches, so a retraining takes the same optimizer steps with the same learning-rate schedule, the same batch-mates
and the same masks, and differs only in that the removed samples' terms carry no gradient — the paired
counterfactual closest to the epsilon-reweighting that influence functions model. (Skipping the removed samples and
re-batching the rest would also take optimizer steps away, ceil(n/B) - ceil((n-k)/B) per epoch, and with Adam every
step moves the weights by about the learning rate whatever its data.) Fine-tuning with every weight 1 is the
original run, bit for bit, whoever calls it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from engine.data.encoding import Encoded, collate
from engine.errors import InputError
from engine.model.dropout import per_sample_dropout, row_keys
from engine.model.footprint import activation_dtype_bytes, batch_for_budget
from engine.model.lm_loss import batch_loss, check_attributable_lora
from engine.spec.run_spec import LoraSpec, TrainSpec


@dataclass
class TrainResult:
    """``initial`` and ``epochs[e-1]`` are LoRA state dicts (CPU tensors); ``losses`` is (epoch, step, loss);
    ``lrs[s]`` is the learning rate used at step s (0-based)."""

    initial: dict[str, torch.Tensor]
    epochs: list[dict[str, torch.Tensor]] = field(default_factory=list)
    losses: list[tuple[int, int, float]] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)

    def epoch_lr(self, epoch: int) -> float:
        """Mean learning rate over the steps of ``epoch`` (1-based): TracIn's weight for that checkpoint."""
        values = [lr for (e, _, _), lr in zip(self.losses, self.lrs) if e == epoch]
        return sum(values) / len(values)


LIBRARIES = ("torch", "transformers", "peft")


def library_versions() -> dict[str, str]:
    """The installed versions of :data:`LIBRARIES`. What a fine-tune or a forward pass computes can change with
    them (transformers 4.46 -> 5.x changed how a position that sees no key attends), so the feature-cache and
    retrain-bank keys hold them."""
    return {name: version(name) for name in LIBRARIES}


def add_lora(model, lora: LoraSpec, seed: int):
    """Wrap ``model`` with a fresh LoRA adapter whose initial weights depend only on ``seed``."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                     target_modules=list(lora.target_modules), task_type="CAUSAL_LM", bias="none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            wrapped = get_peft_model(model, cfg)
        except ValueError as e:
            raise InputError(f"spec field 'lora.target_modules' {list(lora.target_modules)} does not match "
                             f"the model's modules ({e})") from None
    check_attributable_lora(wrapped, f"spec field 'lora.target_modules' {list(lora.target_modules)}")
    return wrapped


def lora_state(model) -> dict[str, torch.Tensor]:
    """A CPU copy of the adapter weights (peft's key names)."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().to("cpu", copy=True) for k, v in get_peft_model_state_dict(model).items()}


def set_lora_state(model, state: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, state)


def epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    """Sample ids in the order of epoch ``epoch`` (1-based): the permutation of ``range(n)`` drawn from
    ``(seed, epoch)``."""
    return [int(i) for i in np.random.default_rng([seed, epoch]).permutation(n)]


def step_schedule(seed: int, epochs: int, n: int, batch_size: int) -> list[tuple[int, list[int]]]:
    """Every optimizer step of a fine-tune in order: (epoch (1-based), the sample ids of its batch). Epoch e's
    batches are consecutive slices of :func:`epoch_order`; the last batch of an epoch may be short."""
    out = []
    for epoch in range(1, epochs + 1):
        order = epoch_order(seed, epoch, n)
        out += [(epoch, order[start:start + batch_size]) for start in range(0, n, batch_size)]
    return out


def batch_terms(model, train_set: list[Encoded], chunk: Sequence[int], pad_id: int, device: torch.device, rows,
                seed: int, epoch: int, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """The per-sample losses [B] of the training batch ``chunk`` (ids into ``train_set``) as a fine-tuning step
    computes them: the batch's dropout row keys set (``rows`` from :func:`per_sample_dropout`, None without
    dropout), the model's forward in its current mode (:func:`engine.model.lm_loss.batch_loss`: the head only
    where a loss is taken). The one home of a training step's forward, shared by :func:`finetune` and the replay
    (engine.model.replay, which passes the step's LoRA weights as ``params``), so both compute the same function."""
    if rows is not None:
        rows.keys = row_keys(seed, epoch, chunk).to(device)
    batch = collate([train_set[i] for i in chunk], pad_id)
    batch = {k: v.to(device) for k, v in batch.items()}
    return batch_loss(model, batch, params)[0]


def micro_batch_size(model, train_set: list[Encoded], cfg: TrainSpec) -> int:
    """How many samples of a batch go through the model at once: ``train.micro_batch_size``, or (None) the most
    whose saved activations fit the budget (engine.model.footprint) at the longest sample's length. A step then
    accumulates the gradients of its parts; with one part it is the plain batch step, bit for bit."""
    if cfg.micro_batch_size is not None:
        return min(cfg.micro_batch_size, cfg.batch_size)
    longest = max((len(e.input_ids) for e in train_set), default=1)
    return min(cfg.batch_size, batch_for_budget(model.config, longest, dtype_bytes=activation_dtype_bytes(model)))


def check_weights(weights: Sequence[float] | None, n: int) -> torch.Tensor | None:
    """The per-sample loss weights as a float64 tensor [n] (None stays None: every weight 1; a step casts them to
    its loss's dtype, where 0 and 1 are exact and a finite-difference weight 1 ± eps keeps its digits in float64);
    ValueError unless there is one finite, non-negative weight per training sample."""
    if weights is None:
        return None
    w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
    if w.shape != (n,):
        raise ValueError(f"{tuple(w.shape)} sample weights for {n} training samples (one per sample)")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError("sample weights must be finite and >= 0")
    return w


def finetune(model, train_set: list[Encoded], pad_id: int, cfg: TrainSpec, device: torch.device,
             progress: bool = True, *, weights: Sequence[float] | None = None,
             seed: int | None = None, on_step: Callable | None = None) -> TrainResult:
    """Train the LoRA parameters of a peft ``model`` in place; return per-epoch states and step losses.

    weights: one loss weight per sample of ``train_set`` [n] (default all 1; 0 = removed, see the module
    docstring); the step count and schedule never depend on them. seed: data-order and dropout seed (default
    ``cfg.seed``). Each step's loss is ``(1/|batch|) sum_i w_i L(z_i)``; ``losses`` records that value.
    on_step(step, epoch, chunk, params, opt): called at every step (1-based) after the gradient (clipped) is in
    ``params[k].grad`` and before ``opt.step()`` moves the weights: the state the step starts from (the replay of
    engine.model.replay records it there).
    """
    from transformers import get_linear_schedule_with_warmup

    w_all = check_weights(weights, len(train_set))
    seed = cfg.seed if seed is None else int(seed)
    micro = micro_batch_size(model, train_set, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = step_schedule(seed, cfg.epochs, len(train_set), cfg.batch_size)
    sched = get_linear_schedule_with_warmup(opt, 0, len(schedule))
    result = TrainResult(initial=lora_state(model))
    bar = tqdm(total=len(schedule), desc="fine-tune", disable=not progress, unit="step")
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), per_sample_dropout(model) as rows:
        torch.manual_seed(seed)  # any other dropout in the base model: deterministic per run
        model.train()
        for step, (epoch, chunk) in enumerate(schedule, start=1):
            opt.zero_grad(set_to_none=True)
            parts = [chunk[a:a + micro] for a in range(0, len(chunk), micro)]
            value = 0.0
            for part in parts:  # gradient accumulation: the batch's loss, a part's activations at a time
                terms = batch_terms(model, train_set, part, pad_id, device, rows, seed, epoch)
                if w_all is not None:
                    terms = terms * w_all[part].to(terms.device, terms.dtype)
                loss = terms.mean() if len(parts) == 1 else terms.sum() / len(chunk)
                loss.backward()
                value += loss.item()
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            result.lrs.append(sched.get_last_lr()[0])
            if on_step is not None:  # the state the step starts from, before the optimizer moves it
                on_step(step, epoch, chunk, params, opt)
            opt.step()
            sched.step()
            result.losses.append((epoch, step, value))
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{value:.3f}")
            if step == len(schedule) or schedule[step][0] != epoch:
                result.epochs.append(lora_state(model))
    bar.close()
    model.eval()
    return result
