"""LoRA fine-tuning: deterministic, a state per epoch, loss goes down, only LoRA weights change."""

import numpy as np
import pytest
import torch

from engine.data.encoding import encode
from engine.data.tasks.base import Sample
from engine.model.base import load_base
from engine.model.finetune import add_lora, finetune, lora_state
from engine.spec.run_spec import LoraSpec, TrainSpec

CPU = torch.device("cpu")
DATA = [Sample(f"say the colour {c}", c, c) for c in ["red", "green", "blue", "black"] * 4]


def _train(seed=0, epochs=3):
    model, tok = load_base("tiny")
    base = {k: v.clone() for k, v in model.state_dict().items()}
    model = add_lora(model, LoraSpec(r=4, alpha=8, dropout=0.0), seed=seed)
    enc = [encode(s, tok, "[INST] {prompt} [/INST] {response}", 32, "response") for s in DATA]
    res = finetune(model, enc, tok.pad_token_id, TrainSpec(epochs=epochs, batch_size=4, lr=1e-2, seed=seed), CPU,
                   progress=False)
    return model, base, res


def test_states_losses_and_determinism():
    model, base, res = _train()
    assert len(res.epochs) == 3 and len(res.losses) == 3 * 4
    assert [e for e, _, _ in res.losses] == [1] * 4 + [2] * 4 + [3] * 4
    first = sum(v for e, _, v in res.losses if e == 1) / 4
    last = sum(v for e, _, v in res.losses if e == 3) / 4
    assert last < first
    assert any(not torch.equal(res.initial[k], res.epochs[-1][k]) for k in res.initial)
    assert all(torch.equal(a, b) for a, b in zip(res.epochs[-1].values(), lora_state(model).values()))
    # the frozen base weights did not move
    merged = model.get_base_model().state_dict()
    for k, v in base.items():
        key = k.replace(".weight", ".base_layer.weight") if k.replace(".weight", ".base_layer.weight") in merged else k
        assert torch.equal(merged[key], v)
    _, _, again = _train()
    assert all(torch.equal(again.epochs[-1][k], res.epochs[-1][k]) for k in res.initial)
    assert [v for *_, v in again.losses] == [v for *_, v in res.losses]


def test_initial_lora_depends_on_seed_only():
    a = add_lora(load_base("tiny")[0], LoraSpec(), seed=3)
    torch.manual_seed(12345)  # global RNG state must not matter
    b = add_lora(load_base("tiny")[0], LoraSpec(), seed=3)
    c = add_lora(load_base("tiny")[0], LoraSpec(), seed=4)
    sa, sb, sc = lora_state(a), lora_state(b), lora_state(c)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_lora_outside_the_decoder_is_a_spec_error():
    from engine.errors import InputError

    with pytest.raises(InputError, match=r"lora.target_modules.*lm_head.*outside the decoder.*LM head"):
        add_lora(load_base("tiny")[0], LoraSpec(target_modules=("q_proj", "lm_head")), seed=0)
    # an embedding's LoRA would be trained but left out of the per-sample gradients (linear blocks only)
    with pytest.raises(InputError, match=r"lora.target_modules.*embed_tokens is a Embedding.*only LoRA on linear"):
        add_lora(load_base("tiny")[0], LoraSpec(target_modules=("q_proj", "embed_tokens")), seed=0)


CUDA = "cuda"  # the device checked against the CPU below


def _train_on(device, dtype, seed=0, epochs=3):
    model, tok = load_base("tiny", dtype=dtype)
    model = add_lora(model, LoraSpec(r=4, alpha=8, dropout=0.0), seed=seed).to(device)
    enc = [encode(s, tok, "[INST] {prompt} [/INST] {response}", 32, "response") for s in DATA]
    return finetune(model, enc, tok.pad_token_id, TrainSpec(epochs=epochs, batch_size=4, lr=1e-2, seed=seed),
                    torch.device(device), progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-3), (torch.bfloat16, 5e-2)])
def test_finetune_on_cuda(dtype, rtol):
    """Fine-tuning on CUDA in float32 and bfloat16 follows the CPU float32 run step by step (same seed, same
    batches): the loss goes down, the step losses and the final adapter agree within the dtype's precision, and
    the saved states are CPU tensors."""
    cpu = _train_on("cpu", torch.float32)
    gpu = _train_on(CUDA, dtype)
    assert [s for _, s, _ in gpu.losses] == [s for _, s, _ in cpu.losses]
    got, want = np.array([v for *_, v in gpu.losses]), np.array([v for *_, v in cpu.losses])
    assert np.isfinite(got).all() and got[-4:].mean() < got[:4].mean()
    np.testing.assert_allclose(got, want, rtol=rtol)
    assert gpu.lrs == cpu.lrs
    for key, value in cpu.epochs[-1].items():
        moved = gpu.epochs[-1][key]
        assert moved.device.type == "cpu"
        diff = float((moved.double() - value.double()).norm() / value.double().norm())
        assert diff <= 10 * rtol, key


def _batches_seen(monkeypatch, enc, **kw):
    """Run a fine-tune and record the samples of every batch (by their token ids)."""
    import engine.model.finetune as ft
    from engine.data.encoding import collate as real

    seen = []

    def spy(batch, pad_id):
        seen.append([e.input_ids for e in batch])
        return real(batch, pad_id)

    monkeypatch.setattr(ft, "collate", spy)
    model, tok = load_base("tiny")
    model = add_lora(model, LoraSpec(r=4, alpha=8, dropout=0.1), seed=0)
    res = finetune(model, enc, tok.pad_token_id, TrainSpec(epochs=3, batch_size=4, lr=1e-2), CPU, progress=False,
                   **kw)
    return seen, res


def _encoded():
    _, tok = load_base("tiny")
    data = [Sample(f"say the colour {c} number {i}", c, c) for i, c in enumerate(["red", "green", "blue"] * 4)]
    return [encode(s, tok, "[INST] {prompt} [/INST] {response}", 32, "response") for s in data]


def test_epoch_order_is_one_permutation_per_seed_and_epoch():
    from engine.model.finetune import epoch_order

    full = epoch_order(3, 1, 10)
    assert sorted(full) == list(range(10)) and full != list(range(10))
    assert full == np.random.default_rng([3, 1]).permutation(10).tolist()
    assert epoch_order(3, 2, 10) != full  # a new permutation every epoch
    assert epoch_order(4, 1, 10) != full  # and another for another seed


def test_a_removal_keeps_the_original_batches_steps_and_schedule(monkeypatch):
    """Weight 0 is a removal inside the original batches: the same samples in the same batches, the same number of
    optimizer steps and learning rates as the original; nothing removed is the original run, bit for bit, with
    dropout on."""
    enc = _encoded()
    full, res_full = _batches_seen(monkeypatch, enc)
    w = np.ones(len(enc))
    w[[2, 7]] = 0.0
    part, res_part = _batches_seen(monkeypatch, enc, weights=w)
    assert part == full and len(res_part.lrs) == len(res_full.lrs) == 3 * 3 and res_part.lrs == res_full.lrs
    assert any(not torch.equal(res_full.epochs[-1][k], res_part.epochs[-1][k]) for k in res_full.initial)
    again, res_again = _batches_seen(monkeypatch, enc, weights=np.ones(len(enc)))
    assert again == full
    assert all(torch.equal(res_full.epochs[-1][k], res_again.epochs[-1][k]) for k in res_full.initial)


def _train_weighted(enc, weights, epochs=2):
    model = add_lora(load_base("tiny")[0], LoraSpec(r=4, alpha=8, dropout=0.1), seed=0)
    return finetune(model, enc, 0, TrainSpec(epochs=epochs, batch_size=4, lr=1e-2), CPU, progress=False,
                    weights=weights)


def test_a_weight_zero_sample_carries_nothing():
    """Removing a sample whose weight is already 0 changes nothing, and so does replacing its text (its term has no
    gradient; its batch-mates' masks and order do not depend on it)."""
    enc = _encoded()
    rng = np.random.default_rng(0)
    w = rng.uniform(0.5, 1.5, len(enc))
    w[5] = 0.0
    base = _train_weighted(enc, w)
    again = w.copy()
    again[5] = 0.0  # "remove" sample 5 once more
    other = list(enc)
    other[5] = _encoded()[6]  # a different sample in its slot, still at weight 0
    for res in (_train_weighted(enc, again), _train_weighted(other, w)):
        assert all(torch.equal(base.epochs[-1][k], res.epochs[-1][k]) for k in base.initial)
    moved = w.copy()
    moved[5] = 1.0
    assert any(not torch.equal(base.epochs[-1][k], _train_weighted(enc, moved).epochs[-1][k]) for k in base.initial)


def test_the_step_loss_is_the_weighted_mean_over_the_batch():
    """Reference: the first step's loss recomputed by hand, (1/|batch|) sum_i w_i L_i over the first batch of
    epoch 1, with the initial adapter and the same dropout masks (dropout 0 here, so plain eval forward)."""
    from engine.data.encoding import per_sample_loss
    from engine.model.finetune import epoch_order

    enc = _encoded()
    w = np.arange(len(enc), dtype=float) % 3  # weights 0, 1, 2
    model = add_lora(load_base("tiny")[0], LoRA_NO_DROPOUT, seed=0)
    res = finetune(model, enc, 0, TrainSpec(epochs=1, batch_size=4, lr=1e-2), CPU, progress=False, weights=w)
    fresh = add_lora(load_base("tiny")[0], LoRA_NO_DROPOUT, seed=0).eval()
    first = epoch_order(0, 1, len(enc))[:4]
    want = 0.0
    with torch.no_grad():
        for i in first:
            e = enc[i]
            ids = torch.tensor([e.input_ids])
            loss = per_sample_loss(fresh(input_ids=ids).logits, torch.tensor([e.labels]))[0]
            want += w[i] * float(loss) / 4
    assert res.losses[0][2] == pytest.approx(want, rel=1e-5)


LoRA_NO_DROPOUT = LoraSpec(r=4, alpha=8, dropout=0.0)


def test_weights_are_checked():
    enc = _encoded()
    with pytest.raises(ValueError, match="one per sample"):
        _train_weighted(enc, np.ones(3), epochs=1)
    with pytest.raises(ValueError, match=">= 0"):
        _train_weighted(enc, -np.ones(len(enc)), epochs=1)


def test_gradient_norm_is_clipped_before_every_step():
    model, tok = load_base("tiny")
    model = add_lora(model, LoraSpec(r=4, alpha=8, dropout=0.0), seed=0)
    enc = _encoded()
    norms = []

    def record(opt, *_):
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    handle = register_optimizer_step_pre_hook(record)
    try:
        finetune(model, enc, tok.pad_token_id, TrainSpec(epochs=1, batch_size=4, lr=1e-2), CPU, progress=False)
        free = list(norms)
        norms.clear()
        model2 = add_lora(load_base("tiny")[0], LoraSpec(r=4, alpha=8, dropout=0.0), seed=0)
        finetune(model2, enc, tok.pad_token_id, TrainSpec(epochs=1, batch_size=4, lr=1e-2, max_grad_norm=1e-3), CPU,
                 progress=False)
    finally:
        handle.remove()
    assert min(free) > 1e-3  # unclipped gradients are larger than the cap ...
    assert max(norms) <= 1e-3 * (1 + 1e-5)  # ... and clipped ones are at most the cap


def test_micro_batches_take_the_same_steps_as_whole_batches():
    """A batch run in parts whose gradients add up is the plain batch step, up to float rounding (float64 here),
    with dropout on (its masks follow the sample, not the part) and uneven parts."""
    def run(micro):
        model, tok = load_base("tiny", dtype=torch.float64)
        model = add_lora(model, LoraSpec(r=4, alpha=8, dropout=0.1), seed=0)
        enc = [encode(s, tok, "[INST] {prompt} [/INST] {response}", 32, "response") for s in DATA]
        cfg = TrainSpec(epochs=2, batch_size=5, lr=1e-2, seed=0, micro_batch_size=micro, max_grad_norm=1.0)
        return finetune(model, enc, tok.pad_token_id, cfg, CPU, progress=False, weights=[1.0, 0.0, 2.0] * 5 + [1.0])

    whole, parts = run(None), run(2)  # None: the tiny model's budget takes the whole batch of 5
    for k in whole.initial:
        torch.testing.assert_close(parts.epochs[-1][k], whole.epochs[-1][k], rtol=1e-10, atol=1e-13)
    assert [v for *_, v in parts.losses] == pytest.approx([v for *_, v in whole.losses], rel=1e-12)
    assert any(not torch.equal(parts.epochs[-1][k], whole.initial[k]) for k in whole.initial)  # it trained

