"""Batched per-sample LoRA gradients equal the batch-size-1 loop; representations are prompt-only."""

import pytest
import torch

from engine.finetune import add_lora
from engine.formatting import encode
from engine.grads import lora_blocks, loop_gradients, sample_features
from engine.models import load_base
from engine.spec import LoraSpec
from engine.tasks.base import Sample

TPL = "[INST] {prompt} [/INST] {response}"
CPU = torch.device("cpu")


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


def _samples(tok, n=7, loss_on="response"):
    rows = [Sample(f"what is {i} plus {3 * i} please", " ".join(["answer", str(4 * i)] * (1 + i % 3)), "x")
            for i in range(n)]
    return [encode(s, tok, TPL, 64, loss_on) for s in rows]


@pytest.mark.parametrize("loss_on", ["response", "sequence"])
def test_batched_equals_loop(lora_model, loss_on):
    model, tok = lora_model
    enc = _samples(tok, loss_on=loss_on)
    f = sample_features(model, enc, tok.pad_token_id, CPU, batch_size=3, progress=False)
    ref = loop_gradients(model, enc, tok.pad_token_id, CPU)
    assert len(f.grads) == len(ref) == 8  # 2 layers x (q, v) x (A, B)
    for got, want in zip(f.grads, ref):
        assert got.dtype == torch.float32 and got.shape == want.shape
        rel = float((got - want).abs().max() / want.abs().max())
        assert rel <= 1e-5


def test_block_names_and_shapes(lora_model):
    model, tok = lora_model
    blocks = lora_blocks(model)
    names = [n for n, _ in blocks]
    assert names[0] == "model.layers.0.self_attn.q_proj.lora_A"
    assert names[1] == "model.layers.0.self_attn.q_proj.lora_B"
    f = sample_features(model, _samples(tok, 2), tok.pad_token_id, CPU, progress=False)
    for (name, mod), g in zip(blocks, f.grads):
        assert g.shape == (2, mod.weight.numel())


def test_reps_are_last_prompt_token_and_batch_invariant(lora_model):
    model, tok = lora_model
    enc = _samples(tok, 5)
    a = sample_features(model, enc, tok.pad_token_id, CPU, batch_size=5, progress=False)
    b = sample_features(model, enc, tok.pad_token_id, CPU, batch_size=1, progress=False)
    assert torch.allclose(a.reps, b.reps, atol=1e-5)
    # prompt-only forward pass gives the same hidden state at the last prompt token (causality)
    e = enc[2]
    ids = torch.tensor([e.input_ids[: e.prompt_len]])
    with torch.no_grad():
        h = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]
    assert torch.allclose(a.reps[2], h, atol=1e-5)


def test_refuses_training_mode(lora_model):
    model, tok = lora_model
    model.train()
    try:
        with pytest.raises(RuntimeError, match="eval"):
            sample_features(model, _samples(tok, 1), tok.pad_token_id, CPU, progress=False)
    finally:
        model.eval()


def test_shards_merge_to_the_whole(lora_model):
    from engine.grads import features_in_shards

    model, tok = lora_model
    enc = _samples(tok, 7)
    whole = sample_features(model, enc, tok.pad_token_id, CPU, batch_size=4, progress=False)
    sharded = features_in_shards(model, enc, tok.pad_token_id, CPU, shard_size=3, batch_size=2, progress=False)
    for a, b in zip(whole.grads, sharded.grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    assert torch.allclose(whole.reps, sharded.reps, atol=1e-6)
    assert torch.allclose(whole.loss, sharded.loss, atol=1e-6)
