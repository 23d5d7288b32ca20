"""How much memory a batch's activations take, from the model's configuration alone, and the batch sizes that fit.

A pass that differentiates through the decoder (fine-tuning, the per-sample gradient pass) keeps, for every token
of the batch and every layer, what autograd saves for the backward pass. For a Llama-shaped layer (hidden h,
intermediate I, key/value width kv = n_kv x head_dim) that is about

    9 h + 3 kv + 5 I   values per token and layer

(the two norms' inputs and outputs, q/k/v and their rotated copies, the attention output and o_proj's input, the
residual stream, the MLP's gate, up, activation, product and down input; the LoRA branches add r-wide tensors,
noise at r << h). Measured on SmolLM2-135M (float32, T <= 48, grammars): 1.73 MB per padded token for the
gradient pass against 1.61 MB from this count; :data:`MARGIN` covers the difference (the attention kernel's
scratch, the per-sample gradient einsum's temporaries, the allocator).

The LM head's logits are not in this count: :func:`engine.model.lm_loss.head_loss` forms them a chunk at a time.
Batch sizes derived here bound a pass's activations by a budget (:data:`ACTIVATION_BUDGET_MB` by default), so
memory follows the model and the sequence length, not a batch size tuned for another model.
"""

from __future__ import annotations

ACTIVATION_BUDGET_MB = 512  # a pass's saved activations, by default (spec: train.micro_batch_size, grad_batch_size)
MARGIN = 1.15  # measured / counted on SmolLM2 (see the module docstring), rounded up
MAX_AUTO_BATCH = 64  # beyond this a larger batch is no faster on a CPU and only costs memory
MB = 1 << 20


def _text_config(config):
    return getattr(config, "get_text_config", lambda: config)()


def activation_bytes_per_token(config, dtype_bytes: int = 4) -> int:
    """Bytes of saved activations per token of a batch that is differentiated through every layer of ``config``
    (a transformers config of a decoder-only LM); ``dtype_bytes``: the activations' element size (4 for float32,
    2 for bfloat16). Includes :data:`MARGIN`."""
    cfg = _text_config(config)
    h = cfg.hidden_size
    inter = getattr(cfg, "intermediate_size", None) or 4 * h
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or h // heads
    kv = (getattr(cfg, "num_key_value_heads", None) or heads) * head_dim
    per_layer = 9 * h + 3 * kv + 5 * inter
    return int(cfg.num_hidden_layers * per_layer * dtype_bytes * MARGIN)


def activation_dtype_bytes(model) -> int:
    """The element size of ``model``'s activations: its floating-point weights' (a quantized base's packed integer
    weights compute in bfloat16: 2)."""
    floating = next((p for p in model.parameters() if p.is_floating_point() and not p.requires_grad), None)
    return floating.element_size() if floating is not None else 2


def batch_for_budget(config, tokens_per_sample: int, budget_mb: float = ACTIVATION_BUDGET_MB,
                     dtype_bytes: int = 4, most: int = MAX_AUTO_BATCH) -> int:
    """The largest batch (1 to ``most``) of samples padded to ``tokens_per_sample`` tokens whose saved activations
    fit ``budget_mb`` (at least 1: one sample is the least a pass can take)."""
    return batch_for_bytes(activation_bytes_per_token(config, dtype_bytes), tokens_per_sample, budget_mb, most)


def batch_for_bytes(bytes_per_token: int, tokens_per_sample: int, budget_mb: float = ACTIVATION_BUDGET_MB,
                    most: int = MAX_AUTO_BATCH) -> int:
    """:func:`batch_for_budget` from a per-token activation count already made (the memory plan's)."""
    per_sample = bytes_per_token * max(1, tokens_per_sample)
    return max(1, min(most, int(budget_mb * MB // per_sample)))
