"""The activation count and the batch sizes that fit a budget (engine.model.footprint), and fine-tuning's automatic
micro-batch. The count is checked against the formula written out here; the measured side (1.73 MB per token on
SmolLM2 against 1.61 MB counted) is in the module docstring and the README (bench.scale's per-stage table)."""

from engine.data.encoding import encode
from engine.data.tasks.base import Sample
from engine.model.base import load_base
from engine.spec.run_spec import TrainSpec

DATA = [Sample(f"say the colour {c}", c, c) for c in ["red", "green", "blue", "black"] * 4]


def test_the_automatic_micro_batch_follows_the_activation_budget():
    from engine.model.finetune import micro_batch_size
    from engine.model.footprint import activation_bytes_per_token

    model, tok = load_base("tiny")
    enc = [encode(s, tok, "[INST] {prompt} [/INST] {response}", 32, "response") for s in DATA]
    assert micro_batch_size(model, enc, TrainSpec(batch_size=8)) == 8  # the tiny model: the whole batch fits
    assert micro_batch_size(model, enc, TrainSpec(batch_size=8, micro_batch_size=3)) == 3
    assert micro_batch_size(model, enc, TrainSpec(batch_size=2, micro_batch_size=3)) == 2
    # a SmolLM2-shaped config: 1.61 MB of saved activations per token from the count, x the margin
    from transformers import LlamaConfig

    smol = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                       num_key_value_heads=3, vocab_size=49152)
    per_token = activation_bytes_per_token(smol)
    assert per_token == int(30 * (9 * 576 + 3 * 192 + 5 * 1536) * 4 * 1.15)
    from engine.model.footprint import batch_for_budget

    assert batch_for_budget(smol, 48) == int(512 * 2**20 // (per_token * 48))  # 5 samples of 48 tokens
    assert batch_for_budget(smol, 10_000) == 1 and batch_for_budget(smol, 1, budget_mb=1e9) == 64


def test_the_activation_element_size_follows_the_frozen_weights():
    import torch

    from engine.model.finetune import add_lora
    from engine.model.footprint import activation_dtype_bytes
    from engine.spec.run_spec import LoraSpec

    assert activation_dtype_bytes(add_lora(load_base("tiny")[0], LoraSpec(), seed=0)) == 4
    assert activation_dtype_bytes(add_lora(load_base("tiny", dtype=torch.bfloat16)[0], LoraSpec(), seed=0)) == 2


def test_an_empty_grad_batch_size_is_sized_from_the_budget():
    from types import SimpleNamespace

    from engine.model.footprint import batch_for_budget
    from engine.pipeline.stages import grad_batch_size
    from engine.spec.load import spec_from_dict

    lm = SimpleNamespace(model=load_base("tiny")[0])
    auto = spec_from_dict({"scoring": {"grad_batch_size": None}, "train": {"max_length": 64}})
    assert grad_batch_size(auto, lm) == batch_for_budget(lm.model.config, 64) == 64  # tiny: the cap
    assert grad_batch_size(spec_from_dict({"scoring": {"grad_batch_size": 7}}), lm) == 7
