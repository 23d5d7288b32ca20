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


def test_epoch_order_is_one_permutation_of_the_full_set_with_removed_samples_skipped():
    from engine.model.finetune import epoch_order

    full = epoch_order(3, 1, 10, range(10))
    assert sorted(full) == list(range(10)) and full != list(range(10))
    kept = [0, 1, 2, 4, 5, 6, 8, 9]  # 3 and 7 removed
    got = [kept[p] for p in epoch_order(3, 1, 10, kept)]
    assert got == [i for i in full if i in kept]
    assert epoch_order(3, 2, 10, range(10)) != full  # a new permutation every epoch
    assert epoch_order(4, 1, 10, range(10)) != full  # and another for another seed


def test_a_retraining_sees_the_kept_samples_in_the_original_order(monkeypatch):
    enc = _encoded()
    full, res_full = _batches_seen(monkeypatch, enc)
    removed = {2, 7}
    ids = [i for i in range(len(enc)) if i not in removed]
    part, _ = _batches_seen(monkeypatch, [enc[i] for i in ids], sample_ids=ids, n_full=len(enc))
    per_epoch = -(-len(enc) // 4)
    for e in range(3):
        want = [x for b in full[e * per_epoch:(e + 1) * per_epoch] for x in b if x not in {enc[i].input_ids for i in removed}]
        got_epoch = part[e * 3:(e + 1) * 3]  # 10 samples in batches of 4: 3 steps per epoch
        assert [x for b in got_epoch for x in b] == want
    # and nothing removed is the original run, bit for bit, with dropout on
    again, res_again = _batches_seen(monkeypatch, enc, sample_ids=list(range(len(enc))), n_full=len(enc))
    assert again == full
    assert all(torch.equal(res_full.epochs[-1][k], res_again.epochs[-1][k]) for k in res_full.initial)


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
