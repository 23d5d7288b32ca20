"""The tiny model with a LoRA adapter whose gradients are all non-zero, shared by the engine tests.

peft starts every LoRA B at zero, which leaves the A blocks without gradient; these tests draw B from a seeded
normal distribution instead.
"""

from __future__ import annotations

import torch


def tiny_lora(r: int = 4, alpha: int = 8, b_std: float = 0.1, seed: int = 1, dtype=torch.float32):
    """``(model, tokenizer)``: the tiny Llama in ``dtype`` with LoRA r/alpha on q_proj and v_proj (dropout 0,
    A initialised from seed 0), every B drawn N(0, b_std²) from ``seed``, in eval mode."""
    from engine.model.base import load_base
    from engine.model.finetune import add_lora
    from engine.spec.run_spec import LoraSpec

    model, tok = load_base("tiny", dtype=dtype)
    model = add_lora(model, LoraSpec(r=r, alpha=alpha, dropout=0.0, target_modules=("q_proj", "v_proj")), seed=0)
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * b_std)  # copy_ casts to the model's dtype
    model.eval()
    return model, tok
