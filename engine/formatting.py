"""Turn (prompt, response) samples into token ids with a loss mask, and batch them.

The template (spec ``train.template``, default ``"[INST] {prompt} [/INST] {response}"``) is split at
``{response}``: the part before it is the *prompt text*, the response (with the whitespace that precedes it)
plus EOS is the *response text*. Both are tokenised separately and concatenated, so the prompt's tokens are
identical with or without the response; the last prompt token (``prompt_len - 1``) is where RepSim reads the
hidden state, and by causality it equals the prompt-only forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.tasks.base import Sample

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    """One tokenised sample. labels[t] = IGNORE where no loss is taken."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    prompt_len: int


def split_template(template: str) -> tuple[str, str]:
    """``(prompt_part, response_part)`` with the whitespace before ``{response}`` moved to the response."""
    head, tail = template.split("{response}", 1)
    stripped = head.rstrip()
    return stripped, head[len(stripped):] + "{response}" + tail


def encode(sample: Sample, tokenizer, template: str, max_length: int, loss_on: str) -> Encoded:
    """Tokenise one sample; truncation keeps at least half of ``max_length`` for the response.

    loss_on: "response" → loss on response tokens (+EOS) only; "sequence" → on every token after the first.
    """
    prompt_tpl, resp_tpl = split_template(template)
    p_ids = tokenizer(prompt_tpl.format(prompt=sample.prompt), add_special_tokens=True)["input_ids"]
    r_ids = tokenizer(resp_tpl.format(response=sample.response), add_special_tokens=False)["input_ids"]
    r_ids = list(r_ids) + [tokenizer.eos_token_id]
    if len(p_ids) + len(r_ids) > max_length:
        r_ids = r_ids[: max(max_length // 2, max_length - len(p_ids))]
        p_ids = p_ids[-(max_length - len(r_ids)):]  # keep the end of the prompt (the template's tail)
    ids = list(p_ids) + r_ids
    if loss_on == "response":
        labels = [IGNORE] * len(p_ids) + r_ids
    else:
        labels = [IGNORE] + ids[1:]
    return Encoded(tuple(ids), tuple(labels), len(p_ids))


def collate(batch: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: input_ids, attention_mask, labels [B, T] and prompt_len [B]."""
    T = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), T), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), T), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), T), dtype=torch.long)
    for b, e in enumerate(batch):
        n = len(e.input_ids)
        ids[b, :n] = torch.tensor(e.input_ids)
        labels[b, :n] = torch.tensor(e.labels)
        mask[b, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels,
            "prompt_len": torch.tensor([e.prompt_len for e in batch])}


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy per sample over its loss tokens: [B, T, V], [B, T] → [B] (float32).

    A sample with no loss token (truncated away) gets 0, not NaN.
    """
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    tok = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
        ignore_index=IGNORE, reduction="none").view(shift_labels.shape)
    n = (shift_labels != IGNORE).sum(1)
    return tok.sum(1) / n.clamp(min=1)
