"""Per-sample LoRA dropout: masks depend on (seed, epoch, sample, module, position, feature) only; the hash is
checked against a plain-integer implementation of murmur3's finaliser."""

import pytest
import torch

from engine.model.dropout import BatchRows, SampleDropout, dropout_mask, fmix32, per_sample_dropout, row_keys

M32 = 0xFFFFFFFF


def fmix_ref(h: int) -> int:
    """murmur3 fmix32 with Python integers (arbitrary precision, masked to 32 bits)."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & M32
    return h ^ (h >> 16)


def test_fmix32_matches_the_integer_reference():
    xs = [0, 1, 2, 12345, 0x7FFFFFFF, 0x80000000, M32, 0xDEADBEEF]
    got = fmix32(torch.tensor(xs, dtype=torch.int64)).tolist()
    assert got == [fmix_ref(x) for x in xs]


def test_a_samples_mask_does_not_depend_on_its_batch():
    keys = row_keys(0, 1, [5, 9, 2])
    alone = dropout_mask(row_keys(0, 1, [9]), module=3, T=7, width=11, p=0.3)
    together = dropout_mask(keys, module=3, T=10, width=11, p=0.3)  # longer batch (padding) and other rows
    assert torch.equal(together[1, :7], alone[0])
    assert not torch.equal(together[0, :7], alone[0])  # another sample, another mask
    assert not torch.equal(dropout_mask(row_keys(0, 2, [9]), 3, 7, 11, 0.3), alone)  # another epoch
    assert not torch.equal(dropout_mask(row_keys(1, 1, [9]), 3, 7, 11, 0.3), alone)  # another seed
    assert not torch.equal(dropout_mask(row_keys(0, 1, [9]), 4, 7, 11, 0.3), alone)  # another module


def test_drop_rate_and_scaling():
    keys = row_keys(0, 1, range(64))
    keep = dropout_mask(keys, 0, 32, 64, p=0.1)
    assert abs(1 - keep.float().mean().item() - 0.1) < 0.01
    rows = BatchRows()
    rows.keys = keys[:2]
    d = SampleDropout(0.25, 0, rows).train()
    x = torch.ones(2, 3, 4)
    y = d(x)
    assert torch.equal(y, dropout_mask(rows.keys, 0, 3, 4, 0.25).float() / 0.75)
    assert torch.equal(d.eval()(x), x)
    with pytest.raises(RuntimeError, match="row keys"):
        SampleDropout(0.25, 0, BatchRows()).train()(x)


def test_peft_dropout_is_swapped_for_the_fine_tune_and_restored():
    from engine.model.base import load_base
    from engine.model.finetune import add_lora
    from engine.spec.run_spec import LoraSpec

    model = add_lora(load_base("tiny")[0], LoraSpec(r=4, alpha=8, dropout=0.1), seed=0)
    before = [type(m.lora_dropout["default"]) for m in model.modules() if hasattr(m, "lora_dropout")]
    with per_sample_dropout(model) as rows:
        inside = [m.lora_dropout["default"] for m in model.modules() if hasattr(m, "lora_dropout")]
        assert rows is not None and all(isinstance(d, SampleDropout) for d in inside)
        assert len({d.module for d in inside}) == len(inside)  # one mask stream per module
    assert [type(m.lora_dropout["default"]) for m in model.modules() if hasattr(m, "lora_dropout")] == before
    plain = add_lora(load_base("tiny")[0], LoraSpec(r=4, alpha=8, dropout=0.0), seed=0)
    with per_sample_dropout(plain) as rows:
        assert rows is None  # no dropout: nothing to fix
