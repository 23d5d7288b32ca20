"""What a fine-tuned model does on a set of samples: teacher-forced losses, next-token KL between two LoRA
states, greedy generations and whether they show the reference answer or the task's target behaviour.

Shared by the convergence analysis (every epoch checkpoint) and the retraining analysis (every retrained
model against the original). All functions run the model in eval mode under ``torch.no_grad`` and batch
samples in length order; results come back in input order.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from engine.data.encoding import Encoded, collate, per_sample_loss
from engine.model.finetune import set_lora_state


def _batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Index batches of at most ``batch_size``, in order of length (less padding)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def _forward(model, encs: Sequence[Encoded], idx: list[int], pad_id: int, device) -> tuple[dict, torch.Tensor]:
    batch = {k: v.to(device) for k, v in collate([encs[i] for i in idx], pad_id).items()}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention"]).logits
    return batch, logits


@torch.no_grad()
def sample_losses(model, encs: Sequence[Encoded], pad_id: int, device, batch_size: int = 16) -> np.ndarray:
    """Per-sample mean token loss [n] (the training objective's per-sample term), float64."""
    model.eval()
    out = np.zeros(len(encs))
    for idx in _batches([len(e.input_ids) for e in encs], batch_size):
        batch, logits = _forward(model, encs, idx, pad_id, device)
        out[idx] = per_sample_loss(logits, batch["labels"]).double().cpu().numpy()
    return out


def response_positions(batch: dict) -> torch.Tensor:
    """Mask [B, T-1] of the positions whose next-token distribution predicts a response token (teacher-forced:
    from the last prompt token to the token before the sample's last), batch padding excluded."""
    B, T = batch["input_ids"].shape
    t = torch.arange(T - 1, device=batch["input_ids"].device)
    return (t[None, :] >= batch["prompt_len"][:, None] - 1) & (t[None, :] < batch["length"][:, None] - 1)


def _kl_rows(logits_p: torch.Tensor, logits_q: torch.Tensor, batch: dict) -> torch.Tensor:
    """Per-sample mean KL(p || q) [B] over the response positions."""
    logp = torch.log_softmax(logits_p[:, :-1].float(), -1)
    logq = torch.log_softmax(logits_q[:, :-1].float(), -1)
    kl = (logp.exp() * (logp - logq)).sum(-1)  # [B, T-1]
    mask = response_positions(batch)
    return (kl * mask).sum(1) / mask.sum(1).clamp(min=1)


@torch.no_grad()
def response_kl(model, state_p: dict, state_q: dict, encs: Sequence[Encoded], pad_id: int, device,
                batch_size: int = 16) -> np.ndarray:
    """Per-sample mean KL(p || q) [n] of the next-token distributions at the response positions, where p is the
    model with LoRA state ``state_p`` and q with ``state_q``. Leaves the model in ``state_q``."""
    return loss_and_kl(model, state_p, state_q, encs, pad_id, device, batch_size)[1]


@torch.no_grad()
def loss_and_kl(model, state_p: dict, state_q: dict, encs: Sequence[Encoded], pad_id: int, device,
                batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(per-sample loss [n] of the model in ``state_q``, per-sample mean KL(p || q) [n]) with two forward passes
    per batch (``sample_losses`` and ``response_kl`` separately take three). Leaves the model in ``state_q``."""
    model.eval()
    loss, kl = np.zeros(len(encs)), np.zeros(len(encs))
    for idx in _batches([len(e.input_ids) for e in encs], batch_size):
        set_lora_state(model, state_p)
        batch, logits_p = _forward(model, encs, idx, pad_id, device)
        set_lora_state(model, state_q)
        _, logits_q = _forward(model, encs, idx, pad_id, device)
        loss[idx] = per_sample_loss(logits_q, batch["labels"]).double().cpu().numpy()
        kl[idx] = _kl_rows(logits_p, logits_q, batch).double().cpu().numpy()
    set_lora_state(model, state_q)
    return loss, kl


@torch.no_grad()
def greedy_generate(model, encs: Sequence[Encoded], pad_id: int, eos_id: int | None, device,
                    max_new_tokens: int, batch_size: int = 16) -> list[list[int]]:
    """Greedy continuations of each sample's prompt (its first ``prompt_len`` tokens), without the prompt."""
    model.eval()
    out: list[list[int]] = [[] for _ in encs]
    for idx in _batches([e.prompt_len - e.n_pad for e in encs], batch_size):
        prompts = [encs[i].input_ids[encs[i].n_pad:encs[i].prompt_len] for i in idx]  # without in-sample pads
        T = max(len(p) for p in prompts)
        ids = torch.full((len(idx), T), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), T), dtype=torch.long)
        for b, p in enumerate(prompts):  # left padding: every prompt ends at the last column
            ids[b, T - len(p):] = torch.tensor(p)
            mask[b, T - len(p):] = 1
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=eos_id,
                             temperature=None, top_p=None, top_k=None)
        for b, i in enumerate(idx):
            toks = gen[b, T:].tolist()
            if eos_id is not None and eos_id in toks:
                toks = toks[:toks.index(eos_id)]
            out[i] = toks
    return out


def shows_answer(generated: str, reference: str) -> bool:
    """Generation accuracy: the greedy continuation (generated tokens only, the prompt excluded) contains the
    reference response, both lowercased (as the paper's authors check), the reference whitespace-trimmed.
    (The app states this rule as ``ui.readings.GEN_ACC_RULE``.)"""
    ref = reference.strip().lower()
    return bool(ref) and ref in generated.lower()


def shows_behaviour(generated: str, reference: str, marker: str | None) -> bool:
    """The task's target behaviour: its marker string in the output; without a marker, the reference answer."""
    return marker in generated if marker else shows_answer(generated, reference)


def generation_report(model, tok, encs: Sequence[Encoded], references: Sequence[str], marker: str | None,
                      device, max_new_tokens: int, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(answer_ok [n] bool, behaviour [n] bool) of greedy generations."""
    gens = greedy_generate(model, encs, tok.pad_token_id, tok.eos_token_id, device, max_new_tokens, batch_size)
    texts = [tok.decode(g, skip_special_tokens=True) for g in gens]
    answer = np.array([shows_answer(t, r) for t, r in zip(texts, references)], dtype=bool)
    behaviour = np.array([shows_behaviour(t, r, marker) for t, r in zip(texts, references)], dtype=bool)
    return answer, behaviour
