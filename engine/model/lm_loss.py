"""The causal-LM loss of a batch from the model's parts: the decoder's last hidden states and the LM head, the head
applied only where a loss is taken and in chunks. The one home of the training objective's forward for fine-tuning
(engine.model.finetune), its replay (engine.model.replay) and the gradient pass (engine.features.grads).

Why not ``model(...).logits``: a causal LM's forward forms the logits at every position of the batch, B x T x
vocabulary, and the loss then keeps three to four tensors of that size for the softmax and its gradient. With
SmolLM2's 49k vocabulary a 32 x 48 batch makes 302 MB per tensor in float32, more than the LoRA gradients of the
whole batch; prompt tokens (``loss_on: response``) and padding carry no loss and need no logits at all.

The value is the model's own: ``per_sample_loss(model(...).logits, labels)`` (engine.data.encoding) up to float
rounding, including a model's final logit soft-capping or scaling where its config has one (Gemma 2, Cohere).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from engine.data.encoding import IGNORE
from engine.errors import InputError

HEAD_CHUNK_MB = 64  # float32 logits of at most this many MB exist at once in head_loss (rows x vocabulary x 4 B)


def _token_ce(x: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor, scale: float | None,
              softcap: float | None) -> torch.Tensor:
    logits = head(x)
    logits = logits if logits.dtype == torch.float64 else logits.float()
    if scale is not None:
        logits = logits * scale
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    return torch.nn.functional.cross_entropy(logits, targets, reduction="none")


def head_loss(hidden: torch.Tensor, head: torch.nn.Module, labels: torch.Tensor, *, scale: float | None = None,
              softcap: float | None = None, chunk_mb: int = HEAD_CHUNK_MB) -> torch.Tensor:
    """Per-sample mean next-token cross-entropy [B] from the last hidden states [B, T, h] and the LM head: the
    same value as :func:`per_sample_loss` of the model's logits, without ever forming them.

    The head is applied only at the positions that carry a loss (``labels[:, 1:] != IGNORE``; a prompt's positions
    and the padding cost nothing), in chunks of rows whose float32 logits take at most ``chunk_mb`` MB. When a
    gradient is being recorded each chunk is checkpointed (``torch.utils.checkpoint``, non-reentrant: it also
    supports the double backward of the replay): its logits are recomputed in the backward pass instead of kept,
    so the memory is one chunk's logits, not the batch's B x T x vocabulary (302 MB in float32 for 32 x 48 tokens
    of SmolLM2's 49k vocabulary, and three to four such tensors live at once for the softmax and its gradient).
    Logits are upcast to float32 (float64 stays float64), then multiplied by ``scale`` and soft-capped
    (``softcap * tanh(logits / softcap)``) when given. A sample with no loss token gets 0.
    """
    labels = labels[:, 1:]
    b_idx, t_idx = (labels != IGNORE).nonzero(as_tuple=True)
    x, targets = hidden[b_idx, t_idx], labels[b_idx, t_idx]
    vocab = head.weight.shape[0]
    rows = max(1, (chunk_mb << 20) // (vocab * 4))
    recompute = torch.is_grad_enabled() and x.requires_grad and x.shape[0] > rows
    parts = [checkpoint(_token_ce, x[a:a + rows], head, targets[a:a + rows], scale, softcap, use_reentrant=False)
             if recompute else _token_ce(x[a:a + rows], head, targets[a:a + rows], scale, softcap)
             for a in range(0, x.shape[0], rows)]
    tok = torch.cat(parts) if len(parts) > 1 else parts[0] if parts else x.new_zeros(0, dtype=torch.float32)
    B = labels.shape[0]
    total = torch.zeros(B, dtype=tok.dtype, device=tok.device).index_add(0, b_idx, tok)
    count = torch.zeros(B, dtype=tok.dtype, device=tok.device).index_add(0, b_idx, torch.ones_like(tok))
    return total / count.clamp(min=1)


def lm_parts(model) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    """``(decoder, head, head options)`` of a causal LM, bare or wrapped by peft: the module whose
    ``last_hidden_state`` feeds the head, the head, and what the model's forward does to the head's output
    (``scale``, ``softcap``, for :func:`head_loss`)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = getattr(base.config, "get_text_config", lambda: base.config)()
    scale = getattr(cfg, "logit_scale", None)
    softcap = getattr(cfg, "final_logit_softcapping", None)
    return base.get_decoder(), base.get_output_embeddings(), {
        "scale": float(scale) if scale not in (None, 1, 1.0) else None,
        "softcap": float(softcap) if softcap else None}


def check_attributable_lora(model, source: str) -> None:
    """Refuse the LoRA layers the gradient pass cannot attribute, naming them and ``source`` (what asked for them:
    a spec field or an adapter folder): a LoRA layer that is not a plain linear one (an embedding's, a
    convolution's), DoRA, and a LoRA layer outside the decoder.

    Outside the decoder, on the LM head: every pass here applies the head only at loss positions, to rows gathered
    from the whole batch, in checkpointed chunks (:func:`head_loss`), so a LoRA layer there sees no per-sample
    [B, T, ·] activations and its per-sample gradients and K-FAC factors cannot be taken the way the decoder's
    are; beside the decoder (a vision tower, a projector) the passes never run it at all. The per-sample gradients
    (engine.features.grads) are those of linear ``lora_A`` / ``lora_B`` blocks only: anything else would be
    trained but silently left out of the scores."""
    from peft.tuners.lora.layer import Linear as LoraLinear
    from peft.tuners.lora.layer import LoraLayer

    decoder, head, _ = lm_parts(model)
    inside = {id(m) for m in decoder.modules()}
    outside = []
    for name, mod in model.named_modules():
        if not isinstance(mod, LoraLayer):
            continue
        short = name.removeprefix("base_model.model.")
        if not isinstance(mod, LoraLinear):
            raise InputError(f"{source}: LoRA layer {short} is a {type(mod).__name__}, not a linear layer; only "
                             "LoRA on linear layers can be attributed")
        if mod.use_dora.get("default", False):
            raise InputError(f"{source}: LoRA layer {short} uses DoRA, which is not supported")
        if id(mod) not in inside:
            outside.append((short, mod is head))
    if outside:
        names = ", ".join(n for n, _ in outside[:3]) + (f" and {len(outside) - 3} more" if len(outside) > 3 else "")
        why = ("the LM head is applied to loss positions only, so it has no per-sample activations to take "
               "gradients from" if any(is_head for _, is_head in outside) else
               "the gradient pass runs the decoder and the LM head only")
        raise InputError(f"{source} puts LoRA on {names}, outside the decoder layers; only LoRA inside the decoder "
                         f"can be attributed ({why})")


def batch_loss(model, batch: dict, params: dict[str, torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss [B], hidden [B, T, h])``: the per-sample mean token loss of a collated ``batch``
    (engine.data.encoding.collate, on the model's device) and the decoder's last hidden states, in the model's
    current mode (dropout on in train mode). ``params``: values for some of the model's parameters by their full
    names (``model.named_parameters()``), as ``torch.func.functional_call`` takes them (the replay differentiates
    through them); they must all live in the decoder."""
    decoder, head, options = lm_parts(model)
    kw = {"input_ids": batch["input_ids"], "attention_mask": batch["attention"]}
    if params is None:
        out = decoder(**kw)
    else:
        from torch.func import functional_call

        prefix = next(name for name, m in model.named_modules() if m is decoder) + "."
        inner = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
        if len(inner) != len(params):
            outside = sorted(set(params) - {prefix + k for k in inner})
            raise ValueError(f"parameters outside the decoder cannot be replayed: {', '.join(outside[:3])}")
        out = functional_call(decoder, inner, (), kw)
    hidden = out.last_hidden_state
    return head_loss(hidden, head, batch["labels"], **options), hidden
