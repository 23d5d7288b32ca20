"""Slow, obviously-correct references for the feature passes (engine.features.grads, engine.features.rept), written from the
formulas with nothing of the code under test: one unpadded sample at a time, the loss spelled out as a loop over
positions, and autograd's ``.grad`` of the LoRA weights (or ``retain_grad`` of a hidden state).

Loss of a sample (the training loss, ``engine.data.encoding``): the mean over positions t with a label of
``-log softmax(logits[t - 1])[input_ids[t]]``, i.e. the next-token cross-entropy of every token that carries a
label (labels[t] != -100). The RepT loss uses the response tokens (t >= prompt_len) whatever the labels say.

Also used by ``bench/grads.py`` (as ``tests.engine._references``) for its side-by-side timing.
"""

from __future__ import annotations

import torch

NO_LABEL = -100  # the "no loss here" label of Hugging Face and engine.data.encoding


def _mean_token_loss(logits: torch.Tensor, input_ids: list[int], positions: list[int]) -> torch.Tensor:
    """mean_{t in positions} -log p(input_ids[t] | input_ids[:t]), with p = softmax(logits[t - 1])."""
    terms = [-torch.log_softmax(logits[t - 1].float(), dim=-1)[input_ids[t]] for t in positions]
    return torch.stack(terms).mean() if terms else logits.sum() * 0


def lora_weights(model) -> list[tuple[str, torch.nn.Parameter]]:
    """``(block name, weight)`` of every LoRA A/B matrix, in parameter order; the block name drops peft's
    ``base_model.model.`` prefix and the ``.default.weight`` suffix (``model.layers.0.self_attn.q_proj.lora_A``)."""
    out = []
    for name, p in model.named_parameters():
        if name.endswith((".lora_A.default.weight", ".lora_B.default.weight")):
            out.append((name.removeprefix("base_model.model.").removesuffix(".default.weight"), p))
    return out


def loop_gradients(model, samples, device) -> tuple[list[str], list[torch.Tensor]]:
    """Per-sample LoRA gradients: block names and, per block, ``[n, out*in]`` float32 (``weight.grad`` flattened
    row-major). One forward and one backward per sample, its own leading pads (if any) masked out of attention."""
    weights = lora_weights(model)
    rows: list[list[torch.Tensor]] = [[] for _ in weights]
    for s in samples:
        ids = list(s.input_ids)
        model.zero_grad(set_to_none=True)
        # a sample's own leading pads (``paper`` preprocessing, n_pad > 0) are masked out of attention
        mask = [0] * s.n_pad + [1] * (len(ids) - s.n_pad)
        logits = model(input_ids=torch.tensor([ids], device=device),
                       attention_mask=torch.tensor([mask], device=device)).logits[0]
        positions = [t for t in range(1, len(ids)) if s.labels[t] != NO_LABEL]
        _mean_token_loss(logits, ids, positions).backward()
        for i, (_, w) in enumerate(weights):
            rows[i].append(w.grad.detach().float().flatten().cpu().clone())
    model.zero_grad(set_to_none=True)
    return [name for name, _ in weights], [torch.stack(r) for r in rows]


def loop_rept(model, samples, layer: int) -> torch.Tensor:
    """RepT parts ``[n, 2h]``: the hidden state at the last prompt token from a prompt-only forward pass, then
    d (mean response-token loss) / d (that hidden state) in the full sequence, via ``retain_grad``."""
    rows = []
    for s in samples:
        ids = list(s.input_ids)
        with torch.no_grad():
            prompt = torch.tensor([ids[: s.prompt_len]])
            h = model(input_ids=prompt, output_hidden_states=True).hidden_states[layer][0, -1]
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
        hs = out.hidden_states[layer]
        hs.retain_grad()
        model.zero_grad(set_to_none=True)
        _mean_token_loss(out.logits[0], ids, list(range(s.prompt_len, len(ids)))).backward()
        rows.append(torch.cat([h, hs.grad[0, s.prompt_len - 1]]).float())
    model.zero_grad(set_to_none=True)
    return torch.stack(rows)
