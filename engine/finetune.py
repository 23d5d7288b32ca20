"""LoRA fine-tuning with peft: AdamW with linear decay, a checkpoint (LoRA state) after every epoch.

The training objective is the mean over the batch of per-sample mean token losses
(``engine.formatting.per_sample_loss``), i.e. the empirical risk (1/n) Σ_i L(z_i) whose per-sample gradients
the attribution methods use. Dropout follows the spec during training; attribution runs in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from engine.formatting import Encoded, collate, per_sample_loss
from engine.spec import LoraSpec, TrainSpec


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
            from engine.errors import InputError

            raise InputError(f"spec field 'lora.target_modules' {list(lora.target_modules)} does not match "
                             f"the model's modules ({e})") from None


def lora_state(model) -> dict[str, torch.Tensor]:
    """A CPU copy of the adapter weights (peft's key names)."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().to("cpu", copy=True) for k, v in get_peft_model_state_dict(model).items()}


def set_lora_state(model, state: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, state)


def finetune(model, train_set: list[Encoded], pad_id: int, cfg: TrainSpec, device: torch.device,
             progress: bool = True) -> TrainResult:
    """Train the LoRA parameters of a peft ``model`` in place; return per-epoch states and step losses."""
    from transformers import get_linear_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = -(-len(train_set) // cfg.batch_size)
    sched = get_linear_schedule_with_warmup(opt, 0, steps_per_epoch * cfg.epochs)
    gen = torch.Generator().manual_seed(cfg.seed)
    result = TrainResult(initial=lora_state(model))
    step = 0
    bar = tqdm(total=steps_per_epoch * cfg.epochs, desc="fine-tune", disable=not progress, unit="step")
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = torch.randperm(len(train_set), generator=gen).tolist()
        for start in range(0, len(order), cfg.batch_size):
            batch = collate([train_set[i] for i in order[start:start + cfg.batch_size]], pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            loss = per_sample_loss(out.logits, batch["labels"]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
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
