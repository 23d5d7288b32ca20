"""Fixtures of the feature tests."""

import pytest
import torch

from engine.model.base import load_base
from engine.model.finetune import add_lora
from engine.spec.run_spec import LoraSpec


@pytest.fixture(scope="module")
def lora_model():
    model, tok = load_base("tiny")
    model = add_lora(model, LoraSpec(r=4, alpha=8, dropout=0.1, target_modules=("q_proj", "v_proj")), seed=0)
    with torch.no_grad():  # peft initialises B = 0; make both factors non-trivial so every block has signal
        g = torch.Generator().manual_seed(1)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    model.eval()
    return model, tok
