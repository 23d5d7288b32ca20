"""Tokenisation with the template: prompt prefix invariance, loss masks, truncation, per-sample loss."""

import torch

from engine.formatting import IGNORE, collate, encode, per_sample_loss, split_template
from engine.tasks.base import Sample

TPL = "[INST] {prompt} [/INST] {response}"


def test_split_template_moves_space_to_response():
    assert split_template(TPL) == ("[INST] {prompt} [/INST]", " {response}")


def test_prompt_tokens_do_not_depend_on_response(tiny_tokenizer):
    a = encode(Sample("add 2 and 3", "5", "x"), tiny_tokenizer, TPL, 64, "response")
    b = encode(Sample("add 2 and 3", "a much longer answer", "x"), tiny_tokenizer, TPL, 64, "response")
    assert a.prompt_len == b.prompt_len
    assert a.input_ids[: a.prompt_len] == b.input_ids[: b.prompt_len]
    assert a.input_ids[-1] == tiny_tokenizer.eos_token_id


def test_loss_masks(tiny_tokenizer):
    s = Sample("add 2 and 3", "five", "x")
    r = encode(s, tiny_tokenizer, TPL, 64, "response")
    assert all(l == IGNORE for l in r.labels[: r.prompt_len])
    assert list(r.labels[r.prompt_len:]) == list(r.input_ids[r.prompt_len:])
    q = encode(s, tiny_tokenizer, TPL, 64, "sequence")
    assert q.labels[0] == IGNORE and list(q.labels[1:]) == list(q.input_ids[1:])


def test_truncation_keeps_response_and_prompt_end(tiny_tokenizer):
    s = Sample("word " * 200, "the answer is here", "x")
    e = encode(s, tiny_tokenizer, TPL, 32, "response")
    assert len(e.input_ids) <= 32
    assert e.input_ids[-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(list(e.input_ids[: e.prompt_len])).endswith("[/INST]")


def test_per_sample_loss_matches_loop_and_ignores_padding(tiny_tokenizer):
    torch.manual_seed(0)
    encs = [encode(Sample(p, r, "x"), tiny_tokenizer, TPL, 64, "response")
            for p, r in [("a b", "c"), ("longer prompt here", "and a longer response")]]
    batch = collate(encs, tiny_tokenizer.pad_token_id)
    V = 50
    logits = torch.randn(*batch["input_ids"].shape, V)
    labels = batch["labels"].clamp(max=V - 1).where(batch["labels"] != IGNORE, torch.tensor(IGNORE))
    got = per_sample_loss(logits, labels)
    for b in range(2):
        terms = [torch.nn.functional.cross_entropy(logits[b, t - 1][None], labels[b, t][None])
                 for t in range(1, labels.shape[1]) if labels[b, t] != IGNORE]
        assert torch.allclose(got[b], torch.stack(terms).mean(), atol=1e-6)
