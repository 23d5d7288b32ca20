"""LoRA fine-tuning with peft: AdamW with linear decay (no warm-up), optional gradient-norm clipping, a checkpoint
(LoRA state) after every epoch.

The training objective is the mean over the batch of per-sample mean token losses
(``engine.data.encoding.per_sample_loss``), i.e. the empirical risk (1/n) Σ_i L(z_i) whose per-sample gradients
the attribution methods use. Attribution runs in eval mode (no dropout).

Data order and dropout are fixed per training sample, so that a retraining without some samples
(engine.analysis.retrain) differs from the original run only by their removal: the order of epoch e is one
permutation of the FULL training set drawn from ``(seed, e)``, and a retraining walks the same permutation,
skipping the removed samples (the others keep their order); LoRA dropout masks depend only on
(seed, epoch, sample id, module, position) (engine.model.dropout). Fine-tuning without removals is therefore
the same run whoever calls it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from engine.data.encoding import Encoded, collate, per_sample_loss
from engine.errors import InputError
from engine.model.dropout import per_sample_dropout, row_keys
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


def add_lora(model, lora: LoraSpec, seed: int):
    """Wrap ``model`` with a fresh LoRA adapter whose initial weights depend only on ``seed``."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                     target_modules=list(lora.target_modules), task_type="CAUSAL_LM", bias="none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return get_peft_model(model, cfg)
        except ValueError as e:
            raise InputError(f"spec field 'lora.target_modules' {list(lora.target_modules)} does not match "
                             f"the model's modules ({e})") from None


def lora_state(model) -> dict[str, torch.Tensor]:
    """A CPU copy of the adapter weights (peft's key names)."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().to("cpu", copy=True) for k, v in get_peft_model_state_dict(model).items()}


def set_lora_state(model, state: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, state)


def epoch_order(seed: int, epoch: int, n_full: int, sample_ids: Sequence[int]) -> list[int]:
    """Positions into ``sample_ids`` in the order of epoch ``epoch`` (1-based): the permutation of the full set
    ``range(n_full)`` drawn from ``(seed, epoch)``, restricted to ``sample_ids`` (the others are skipped)."""
    where = {int(s): i for i, s in enumerate(sample_ids)}
    perm = np.random.default_rng([seed, epoch]).permutation(n_full)
    return [where[int(s)] for s in perm if int(s) in where]


def finetune(model, train_set: list[Encoded], pad_id: int, cfg: TrainSpec, device: torch.device,
             progress: bool = True, *, sample_ids: Sequence[int] | None = None, n_full: int | None = None,
             seed: int | None = None) -> TrainResult:
    """Train the LoRA parameters of a peft ``model`` in place; return per-epoch states and step losses.

    sample_ids: the full-set id of each sample of ``train_set`` (default 0..n-1); n_full: the size of the full
    training set the data order is drawn over (default len(train_set)); seed: data-order and dropout seed
    (default ``cfg.seed``). The learning-rate schedule spans this training set's own steps.
    """
    from transformers import get_linear_schedule_with_warmup

    ids = list(range(len(train_set))) if sample_ids is None else [int(i) for i in sample_ids]
    if len(ids) != len(train_set):
        raise ValueError(f"{len(ids)} sample ids for {len(train_set)} training samples")
    n_full = len(train_set) if n_full is None else int(n_full)
    if ids and (min(ids) < 0 or max(ids) >= n_full):
        raise ValueError(f"sample ids must lie in 0..{n_full - 1}")
    seed = cfg.seed if seed is None else int(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = -(-len(train_set) // cfg.batch_size)
    sched = get_linear_schedule_with_warmup(opt, 0, steps_per_epoch * cfg.epochs)
    result = TrainResult(initial=lora_state(model))
    step = 0
    bar = tqdm(total=steps_per_epoch * cfg.epochs, desc="fine-tune", disable=not progress, unit="step")
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), per_sample_dropout(model) as rows:
        torch.manual_seed(seed)  # any other dropout in the base model: deterministic per run
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            order = epoch_order(seed, epoch, n_full, ids)
            for start in range(0, len(order), cfg.batch_size):
                chunk = order[start:start + cfg.batch_size]
                if rows is not None:
                    rows.keys = row_keys(seed, epoch, [ids[i] for i in chunk]).to(device)
                batch = collate([train_set[i] for i in chunk], pad_id)
                batch = {k: v.to(device) for k, v in batch.items()}
                out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                loss = per_sample_loss(out.logits, batch["labels"]).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                result.lrs.append(sched.get_last_lr()[0])
                opt.step()
                sched.step()
                step += 1
                value = loss.item()
                result.losses.append((epoch, step, value))
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{value:.3f}")
            result.epochs.append(lora_state(model))
    bar.close()
    model.eval()
    return result
