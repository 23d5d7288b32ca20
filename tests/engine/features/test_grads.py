"""Batched per-sample LoRA gradients equal the batch-size-1 loop; representations are prompt-only."""

import pytest
import torch
from _models import tiny_lora
from _references import loop_gradients

from engine.data.encoding import encode
from engine.data.tasks.base import Sample
from engine.errors import EngineStateError
from engine.features.grads import lora_blocks, sample_features
from engine.model.base import load_base

TPL = "[INST] {prompt} [/INST] {response}"
CPU = torch.device("cpu")


def _samples(tok, n=7, loss_on="response"):
    rows = [Sample(f"what is {i} plus {3 * i} please", " ".join(["answer", str(4 * i)] * (1 + i % 3)), "x")
            for i in range(n)]
    return [encode(s, tok, TPL, 64, loss_on) for s in rows]


@pytest.mark.parametrize("loss_on", ["response", "sequence"])
def test_batched_equals_loop(lora_model, loss_on):
    model, tok = lora_model
    enc = _samples(tok, loss_on=loss_on)
    f = sample_features(model, enc, tok.pad_token_id, CPU, batch_size=3, progress=False)
    names, ref = loop_gradients(model, enc, CPU)
    assert list(f.block_names) == names and len(ref) == 8  # 2 layers x (q, v) x (A, B)
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
        with pytest.raises(EngineStateError, match="eval"):
            sample_features(model, _samples(tok, 1), tok.pad_token_id, CPU, progress=False)
    finally:
        model.eval()


def test_a_model_without_lora_blocks_and_mismatched_shards_are_engine_state_errors(lora_model):
    from engine.features.grads import merge_features

    model, tok = lora_model
    plain, _ = load_base("tiny")  # no adapter at all
    plain.eval()
    with pytest.raises(EngineStateError, match="no LoRA blocks.*target_modules"):
        sample_features(plain, _samples(tok, 1), tok.pad_token_id, CPU, progress=False)
    a = sample_features(model, _samples(tok, 2), tok.pad_token_id, CPU, progress=False)
    b = type(a)(grads=a.grads[:2], reps=a.reps, loss=a.loss, block_names=a.block_names[:2])
    with pytest.raises(EngineStateError, match="shard 1 has 2"):
        merge_features([a, b])


def test_shards_merge_to_the_whole(lora_model):
    from engine.features.grads import features_in_shards

    model, tok = lora_model
    enc = _samples(tok, 7)
    whole = sample_features(model, enc, tok.pad_token_id, CPU, batch_size=4, progress=False)
    sharded = features_in_shards(model, enc, tok.pad_token_id, CPU, shard_size=3, batch_size=2, progress=False)
    for a, b in zip(whole.grads, sharded.grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    assert torch.allclose(whole.reps, sharded.reps, atol=1e-6)
    assert torch.allclose(whole.loss, sharded.loss, atol=1e-6)


def _loop_factors(model, enc, pad_id):
    """Reference K-FAC factor sums: one unpadded sample at a time, hooks keep each LoRA block's input and
    output, ``.grad`` of the output gives dy, and a Python loop over tokens adds the outer products."""
    from engine.data.encoding import collate, per_sample_loss

    blocks = lora_blocks(model)
    act = [torch.zeros(m.in_features, m.in_features, dtype=torch.float64) for _, m in blocks]
    grad = [torch.zeros(m.out_features, m.out_features, dtype=torch.float64) for _, m in blocks]
    tokens = 0
    for e in enc:
        seen = {}

        def hook(i):
            def f(_mod, args, out):
                out.retain_grad()
                seen[i] = (args[0].detach(), out)
            return f

        handles = [m.register_forward_hook(hook(i)) for i, (_, m) in enumerate(blocks)]
        try:
            batch = collate([e], pad_id)
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            per_sample_loss(out.logits, batch["labels"]).sum().backward()
        finally:
            for h in handles:
                h.remove()
        for i in range(len(blocks)):
            x, y = seen[i]
            for t in range(x.shape[1]):
                act[i] += torch.outer(x[0, t], x[0, t]).double()
                grad[i] += torch.outer(y.grad[0, t], y.grad[0, t]).double()
        tokens += len(e.input_ids)
    model.zero_grad(set_to_none=True)
    return act, grad, tokens


def test_kfac_factors_equal_a_loop_over_samples_and_tokens(lora_model):
    model, tok = lora_model
    enc = _samples(tok, 5)  # different lengths: the batched pass pads, padding must not count
    f = sample_features(model, enc, tok.pad_token_id, CPU, batch_size=3, progress=False, kfac=True)
    act, grad, tokens = _loop_factors(model, enc, tok.pad_token_id)
    assert f.kfac.samples == 5 and f.kfac.tokens == tokens
    for got, want in zip(f.kfac.act + f.kfac.grad, act + grad):
        assert got.dtype == torch.float64 and got.shape == want.shape
        assert float((got - want).abs().max() / want.abs().max()) <= 1e-5
    assert sample_features(model, enc, tok.pad_token_id, CPU, progress=False).kfac is None


def test_kfac_factors_of_shards_add_up(lora_model):
    from engine.features.grads import features_in_shards

    model, tok = lora_model
    enc = _samples(tok, 7)
    whole = sample_features(model, enc, tok.pad_token_id, CPU, batch_size=4, progress=False, kfac=True)
    sharded = features_in_shards(model, enc, tok.pad_token_id, CPU, shard_size=3, batch_size=2, progress=False,
                                 kfac=True)
    assert (sharded.kfac.samples, sharded.kfac.tokens) == (whole.kfac.samples, whole.kfac.tokens)
    for a, b in zip(whole.kfac.act + whole.kfac.grad, sharded.kfac.act + sharded.kfac.grad):
        assert float((a - b).abs().max() / a.abs().max()) <= 1e-5


CUDA = "cuda"  # the device checked against the CPU below


def _rel(got, want) -> float:
    return float((got.double() - want.double()).norm() / want.double().norm())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_gradient_pass_on_cuda(dtype, tol):
    """The batched gradient pass (gradients, K-FAC factors, representations) of a model on CUDA in float32 and
    bfloat16, as the pipeline loads it, against the loop reference and the CPU pass on the same weights in
    float32 (bfloat16 compute keeps about 3 significant digits). Results come back as float32 CPU tensors."""
    import copy

    model, tok = tiny_lora(dtype=dtype)
    enc = _samples(tok, 7)
    reference = copy.deepcopy(model).float()  # the same (rounded) weights, in float32 on the CPU
    names, loop = loop_gradients(reference, enc, CPU)
    want = sample_features(reference, enc, tok.pad_token_id, CPU, batch_size=3, progress=False, kfac=True)
    got = sample_features(model.to(CUDA), enc, tok.pad_token_id, torch.device(CUDA), batch_size=3, progress=False,
                          kfac=True)
    assert list(got.block_names) == names
    for a, b, c in zip(got.grads, loop, want.grads):
        assert a.device.type == "cpu" and a.dtype == torch.float32 and a.shape == b.shape
        assert _rel(a, b) <= tol and _rel(c, b) <= 1e-5
    for a, b in zip(got.kfac.act + got.kfac.grad, want.kfac.act + want.kfac.grad):
        assert a.device.type == "cpu" and _rel(a, b) <= 2 * tol
    assert got.kfac.tokens == want.kfac.tokens
    assert _rel(got.reps, want.reps) <= tol and _rel(got.loss, want.loss) <= tol
