"""Turn (prompt, response) samples into token ids with a loss mask, and batch them.

Rendering (spec ``train.template``):
- a format string such as the paper's ``"[INST] {prompt} [/INST] {response}"``, split at ``{response}``: the part
  before it is the *prompt text*, the response with the whitespace that precedes it is the rest;
- ``"chat"``: the tokenizer's own chat template, user turn = prompt, assistant turn = response. The prompt text is
  the user turn rendered with the generation prompt (``add_generation_prompt=True``), which must be a prefix of
  the whole conversation (InputError otherwise); special tokens come from the template, none are added.

Tokenisation is joint: the whole text (prompt text + response text) is tokenised once, so the ids are exactly what
the tokenizer gives the sample's text. Tokenising the two parts separately is wrong for SentencePiece-style
tokenizers (Llama-2, Mistral: a "▁" prefix on every call), where the response alone starts with a stray token the
joint text does not have. The prompt/response boundary ``prompt_len`` is the length of the common prefix of the
joint ids and the prompt text's own ids: the prompt tokens are identical with or without the response, so the
last prompt token (``prompt_len - 1``) is where RepSim reads the hidden state, and by causality it equals the
prompt-only forward pass. (When a token straddles the boundary, it belongs to the response.)

Preprocessing (spec ``train.preprocessing``):
- ``clean`` (default): EOS appended after the response (not for ``chat``: its assistant turn already ends with
  the template's end-of-turn token); loss on the response tokens (``loss_on: response``) or on every token after
  the first (``sequence``); truncation keeps at least half of ``max_length`` for the response and the end of the
  prompt; batches are right-padded and padding carries no loss.
- ``paper``: the authors' code (``tokenizer(text, truncation=True, padding="max_length", max_length=128)`` with
  ``pad_token = eos_token`` and left padding; ``labels = input_ids``): no EOS after the response, truncation keeps
  the first ``max_length`` tokens, every sample is left-padded to ``max_length`` with EOS, and the pads stay in the
  labels, so the loss averages all ``max_length - 1`` next-token positions, pad predictions included. The pads are
  masked out of attention (``n_pad`` leading positions) as the tokenizer's attention mask does.

Pad attention (spec ``train.pad_attention``; it matters only for rows that see no key, i.e. the leading pads of
``paper``): ``none`` gives such a row no attention, as transformers 5.x does: its output, hence the LoRA gradient of
its loss term, is zero, and ``paper`` then trains on the real tokens only (the pad terms are constants).
``legacy_unmask`` rebuilds what the authors' stack did (transformers 4.46, sdpa on CUDA:
``AttentionMaskConverter._unmask_unattended``): a row that sees no key attends to EVERY position, future real tokens
included, while every other row keeps the causal padding mask. The pad predictions then depend on the sample and
carry most of an untrained adapter's gradient. The choice is recorded on each :class:`Encoded` (``unmask_pads``), so
every forward that collates it — fine-tuning, gradients, representations, the analyses' losses — uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.data.tasks.base import Sample
from engine.errors import InputError

IGNORE = -100
CHAT = "chat"
PREPROCESSING = ("clean", "paper")
PAD_ATTENTION = ("none", "legacy_unmask")


class Encoded:
    """One tokenised sample. labels[t] = IGNORE where no loss is taken, else the token itself (input_ids[t]; the
    loss at t is that of predicting token t, as every encoding here sets it — other labels are refused).

    prompt_len: index of the last prompt token + 1 (leading pads included); n_pad: leading pad tokens that are
    part of the sample (``paper`` preprocessing): masked out of attention, kept in the labels. unmask_pads: those
    leading pads attend to every position (``train.pad_attention: legacy_unmask``, see the module docstring).

    Immutable and compact: the ids as int32 bytes and the loss positions as bits (about 230 bytes for 48 tokens,
    against ~1 KB for two tuples of ints) — the encoded training set is the largest per-sample state a run holds.
    ``input_ids`` and ``labels`` are rebuilt as tuples of int on access.
    """

    __slots__ = ("_ids", "_loss", "prompt_len", "n_pad", "unmask_pads")

    def __init__(self, input_ids, labels, prompt_len: int, n_pad: int = 0, unmask_pads: bool = False):
        ids = np.asarray(input_ids, dtype=np.int64).reshape(-1)
        lab = np.asarray(labels, dtype=np.int64).reshape(-1)
        loss = lab != IGNORE
        if lab.shape != ids.shape or (lab[loss] != ids[loss]).any():
            raise ValueError("labels must have one entry per token: the token itself, or IGNORE")
        if ids.size and not (0 <= ids.min() and ids.max() < 1 << 31):
            raise ValueError("token ids must lie in 0 .. 2**31 - 1")
        for name, value in (("_ids", ids.astype(np.int32).tobytes()), ("_loss", np.packbits(loss).tobytes()),
                            ("prompt_len", int(prompt_len)), ("n_pad", int(n_pad)),
                            ("unmask_pads", bool(unmask_pads) and int(n_pad) > 0)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"Encoded is immutable (cannot set {name!r})")

    def __delattr__(self, name):
        raise AttributeError(f"Encoded is immutable (cannot delete {name!r})")

    @property
    def input_ids(self) -> tuple[int, ...]:
        return tuple(np.frombuffer(self._ids, np.int32).tolist())

    @property
    def labels(self) -> tuple[int, ...]:
        ids = np.frombuffer(self._ids, np.int32)
        loss = np.unpackbits(np.frombuffer(self._loss, np.uint8), count=ids.size).astype(bool)
        return tuple(np.where(loss, ids, IGNORE).tolist())

    def __reduce__(self):  # a worker process receives it through the constructor (slots, no __setattr__)
        return Encoded, (self.input_ids, self.labels, self.prompt_len, self.n_pad, self.unmask_pads)

    def _key(self):
        return self._ids, self._loss, self.prompt_len, self.n_pad, self.unmask_pads

    def __eq__(self, other):
        return isinstance(other, Encoded) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return (f"Encoded(input_ids={self.input_ids}, labels={self.labels}, prompt_len={self.prompt_len}, "
                f"n_pad={self.n_pad}, unmask_pads={self.unmask_pads})")


def split_template(template: str) -> tuple[str, str]:
    """``(prompt_part, response_part)`` with the whitespace before ``{response}`` moved to the response."""
    head, tail = template.split("{response}", 1)
    stripped = head.rstrip()
    return stripped, head[len(stripped):] + "{response}" + tail


def render(sample: Sample, tokenizer, template: str) -> tuple[str, str, bool]:
    """``(prompt_text, full_text, add_special_tokens)``: the prompt text is a prefix of the full text."""
    if template == CHAT:
        if not getattr(tokenizer, "chat_template", None):
            raise InputError("spec field 'train.template' is 'chat' but the model's tokenizer has no chat template; "
                             "give a format string with {prompt} and {response} instead")
        user = {"role": "user", "content": sample.prompt}
        prompt = tokenizer.apply_chat_template([user], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template([user, {"role": "assistant", "content": sample.response}],
                                             tokenize=False)
        if not full.startswith(prompt):
            raise InputError("spec field 'train.template' is 'chat' but the tokenizer's chat template does not render "
                             "the user turn (with the generation prompt) as a prefix of the conversation, so the "
                             "prompt/response boundary is undefined; use a format string instead")
        return prompt, full, False
    head, tail = split_template(template)
    prompt = head.format(prompt=sample.prompt)
    return prompt, prompt + tail.format(response=sample.response), True


def _ids(tokenizer, text: str, add_special: bool, **kw) -> list[int]:
    return list(tokenizer(text, add_special_tokens=add_special, **kw)["input_ids"])


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def encode(sample: Sample, tokenizer, template: str, max_length: int, loss_on: str,
           preprocessing: str = "clean", pad_attention: str = "none") -> Encoded:
    """Tokenise one sample (see the module docstring for ``template``, ``preprocessing`` and ``pad_attention``).

    loss_on ("clean" only): "response" → loss on response tokens (+EOS) only; "sequence" → on every token after
    the first. "paper" puts the loss on every position.
    """
    if preprocessing not in PREPROCESSING:
        raise InputError(f"spec field 'train.preprocessing' must be one of {', '.join(PREPROCESSING)}, "
                         f"got {preprocessing!r}")
    if pad_attention not in PAD_ATTENTION:
        raise InputError(f"spec field 'train.pad_attention' must be one of {', '.join(PAD_ATTENTION)}, "
                         f"got {pad_attention!r}")
    prompt_text, full_text, add_special = render(sample, tokenizer, template)
    if preprocessing == "paper":
        return _encode_paper(tokenizer, prompt_text, full_text, add_special, max_length,
                             pad_attention == "legacy_unmask")
    ids = _ids(tokenizer, full_text, add_special)
    n_prompt = _common_prefix(ids, _ids(tokenizer, prompt_text, add_special))
    p_ids, r_ids = ids[:n_prompt], ids[n_prompt:]
    if template != CHAT:
        r_ids = r_ids + [tokenizer.eos_token_id]
    if len(p_ids) + len(r_ids) > max_length:
        r_ids = r_ids[: max(max_length // 2, max_length - len(p_ids))]
        p_ids = p_ids[-(max_length - len(r_ids)):]  # keep the end of the prompt (the template's tail)
    ids = p_ids + r_ids
    labels = [IGNORE] * len(p_ids) + r_ids if loss_on == "response" else [IGNORE] + ids[1:]
    return Encoded(ids, labels, len(p_ids))


def _encode_paper(tokenizer, prompt_text: str, full_text: str, add_special: bool, max_length: int,
                  unmask_pads: bool) -> Encoded:
    """The authors' preprocessing: joint text, first ``max_length`` tokens, left-padded with EOS, labels = ids."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise InputError("spec field 'train.preprocessing' is 'paper', which pads with EOS, but the tokenizer has no "
                         "EOS token")
    ids = _ids(tokenizer, full_text, add_special, truncation=True, max_length=max_length)
    n_prompt = _common_prefix(ids, _ids(tokenizer, prompt_text, add_special))
    n_pad = max_length - len(ids)
    padded = [eos] * n_pad + ids
    return Encoded(padded, padded, n_pad + n_prompt, n_pad, unmask_pads)


def collate(batch: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: input_ids, attention_mask, labels, token_mask [B, T]; prompt_len, n_pad, length [B].

    attention_mask is 0 on batch padding and on a sample's own leading pads (``n_pad``); token_mask is 1 on every
    position of the sample (its leading pads included: under ``paper`` preprocessing they carry loss); length is
    the sample's own length (its last position + 1). ``attention`` is what the model's forward takes as its
    attention mask: ``attention_mask`` itself, or, when a sample has ``unmask_pads``, the 4-D boolean mask of
    :func:`legacy_unmask_mask` [B, 1, T, T].
    """
    T = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), T), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), T), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), T), dtype=torch.long)
    tokens = torch.zeros((len(batch), T), dtype=torch.bool)
    for b, e in enumerate(batch):
        n = len(e.input_ids)
        ids[b, :n] = torch.tensor(e.input_ids)
        labels[b, :n] = torch.tensor(e.labels)
        mask[b, e.n_pad:n] = 1
        tokens[b, :n] = True
    legacy = [e.unmask_pads for e in batch]
    if any(legacy) and not all(u or e.n_pad == 0 for u, e in zip(legacy, batch)):
        raise ValueError("a batch mixes samples whose leading pads attend (train.pad_attention 'legacy_unmask') "
                         "with samples whose leading pads do not")
    attention = legacy_unmask_mask(mask) if any(legacy) else mask
    return {"input_ids": ids, "attention_mask": mask, "attention": attention, "labels": labels, "token_mask": tokens,
            "prompt_len": torch.tensor([e.prompt_len for e in batch]),
            "n_pad": torch.tensor([e.n_pad for e in batch]),
            "length": torch.tensor([len(e.input_ids) for e in batch])}


def legacy_unmask_mask(mask: torch.Tensor) -> torch.Tensor:
    """The attention mask transformers 4.46 gave sdpa on CUDA, [B, T] (1 = real key) → [B, 1, T, T] bool
    (True = may attend): query t sees key s iff s <= t and mask[b, s]; a query that sees no key that way sees
    every key (``_unmask_unattended``)."""
    T = mask.shape[1]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool, device=mask.device))
    allowed = causal[None, None] & mask.bool()[:, None, None, :]
    return allowed | ~allowed.any(dim=-1, keepdim=True)


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy per sample over its loss tokens: [B, T, V], [B, T] → [B] (float32; float64
    for float64 logits, which the metagradient's finite-difference tests need).

    A sample with no loss token (truncated away) gets 0, not NaN.
    """
    shift_logits = logits[:, :-1]
    shift_logits = shift_logits if shift_logits.dtype == torch.float64 else shift_logits.float()
    shift_labels = labels[:, 1:]
    tok = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
        ignore_index=IGNORE, reduction="none").view(shift_labels.shape)
    n = (shift_labels != IGNORE).sum(1)
    return tok.sum(1) / n.clamp(min=1)


@dataclass(frozen=True)
class EncodedData:
    """Token ids and loss masks of every sample of a task (train and test, in id order), and their labels."""

    train: list[Encoded]
    test: list[Encoded]
    train_labels: list[str]
    test_labels: list[str]
