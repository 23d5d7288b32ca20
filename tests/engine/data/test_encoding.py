"""Tokenisation with the template: prompt prefix invariance, loss masks, truncation, per-sample loss."""

import numpy as np
import pytest
import torch

from engine.data.encoding import IGNORE, Encoded, collate, encode, per_sample_loss, split_template
from engine.data.tasks.base import Sample
from engine.errors import InputError

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


# ---------------------------------------------------------------------------------------------- joint tokenization

import copy  # noqa: E402

SAMPLES = [Sample("how do you feel", "joyful", "joy"), Sample("name the emotion", "sadness", "sad"),
           Sample("i feel happy", "joy and happy", "joy")]


def test_sentencepiece_response_is_tokenized_jointly_with_the_prompt(sp_tokenizer):
    for s in SAMPLES:
        prompt, full = f"[INST] {s.prompt} [/INST]", f"[INST] {s.prompt} [/INST] {s.response}"
        joint = sp_tokenizer(full)["input_ids"]
        separate = sp_tokenizer(prompt)["input_ids"] + sp_tokenizer(" " + s.response, add_special_tokens=False)["input_ids"]
        assert separate != joint  # the fixture has the problem: a stray "▁" token at the boundary
        e = encode(s, sp_tokenizer, TPL, 64, "response")
        assert list(e.input_ids) == joint + [sp_tokenizer.eos_token_id]
        assert e.prompt_len == len(sp_tokenizer(prompt)["input_ids"])
        assert list(e.input_ids[:e.prompt_len]) == sp_tokenizer(prompt)["input_ids"]  # RepSim's prompt-only prefix


def test_a_token_straddling_the_boundary_belongs_to_the_response(tiny_tokenizer):
    # "{prompt}{response}" with nothing between: the joint text can merge across the boundary
    s = Sample("the answ", "er is here", "x")
    e = encode(s, tiny_tokenizer, "{prompt}{response}", 64, "response")
    joint = tiny_tokenizer("the answer is here")["input_ids"]
    assert list(e.input_ids) == joint + [tiny_tokenizer.eos_token_id]
    alone = tiny_tokenizer("the answ")["input_ids"]
    assert list(e.input_ids[:e.prompt_len]) == alone[:e.prompt_len] and e.prompt_len <= len(alone)


@pytest.mark.parametrize("which", ["tiny", "sentencepiece"])
def test_paper_preprocessing_equals_the_authors_tokenizer_call(which, tiny_tokenizer, sp_tokenizer):
    """The authors' code: pad = EOS, left padding, tokenizer(text, truncation=True, padding='max_length',
    max_length=L), labels = input_ids (pads kept)."""
    tok = copy.deepcopy(tiny_tokenizer if which == "tiny" else sp_tokenizer)
    L = 24
    samples = SAMPLES + [Sample("word " * 40, "the long answer", "x")]  # one truncated
    ref = copy.deepcopy(tok)
    ref.pad_token = ref.eos_token
    ref.padding_side = "left"
    for s in samples:
        want = ref(TPL.format(prompt=s.prompt, response=s.response), truncation=True, padding="max_length",
                   max_length=L)
        e = encode(s, tok, TPL, L, "sequence", "paper")
        assert list(e.input_ids) == want["input_ids"] and list(e.labels) == want["input_ids"]
        batch = collate([e], tok.eos_token_id)
        assert batch["attention_mask"][0].tolist() == want["attention_mask"]
        assert e.n_pad == L - sum(want["attention_mask"])
        if e.n_pad:  # the pads are EOS, and no EOS follows the response
            assert set(e.input_ids[:e.n_pad]) == {tok.eos_token_id} and e.input_ids[-1] != tok.eos_token_id
        prompt_ids = ref(f"[INST] {s.prompt} [/INST]")["input_ids"]
        assert e.prompt_len == e.n_pad + min(len(prompt_ids), L - e.n_pad)


def test_paper_loss_averages_every_position_pads_included(tiny_tokenizer):
    e = encode(SAMPLES[0], tiny_tokenizer, TPL, 24, "sequence", "paper")
    assert e.n_pad > 0
    batch = collate([e], tiny_tokenizer.pad_token_id)
    torch.manual_seed(0)
    logits = torch.randn(1, 24, len(tiny_tokenizer))
    want = torch.stack([torch.nn.functional.cross_entropy(logits[0, t - 1][None], batch["input_ids"][0, t][None])
                        for t in range(1, 24)]).mean()  # all 23 next-token positions
    assert torch.allclose(per_sample_loss(logits, batch["labels"])[0], want, atol=1e-6)


def test_paper_samples_run_through_the_model_without_nan(tiny_tokenizer):
    from engine.analysis.outputs import sample_losses
    from engine.model.base import load_base

    model, tok = load_base("tiny")
    encs = [encode(s, tok, TPL, 24, "sequence", "paper") for s in SAMPLES]
    loss = sample_losses(model, encs, tok.pad_token_id, torch.device("cpu"), batch_size=2)
    assert np.all(np.isfinite(loss)) and np.all(loss > 0)


def test_collate_masks_a_samples_own_leading_pads():
    a = Encoded((9, 9, 5, 6, 7), (9, 9, 5, 6, 7), prompt_len=4, n_pad=2)
    b = Encoded((5, 6, 7), (IGNORE, 6, 7), prompt_len=2)
    batch = collate([a, b], pad_id=0)
    assert batch["attention_mask"].tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch["token_mask"].tolist() == [[True] * 5, [True, True, True, False, False]]
    assert batch["length"].tolist() == [5, 3] and batch["n_pad"].tolist() == [2, 0]


def test_chat_template_user_turn_prompt_assistant_turn_response(chat_tokenizer):
    tok = chat_tokenizer
    s = SAMPLES[0]
    user = [{"role": "user", "content": s.prompt}]
    full = tok.apply_chat_template(user + [{"role": "assistant", "content": s.response}], tokenize=False)
    prompt = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert full.startswith(prompt) and full.endswith("<|im_end|>\n")
    e = encode(s, tok, "chat", 64, "response")
    assert list(e.input_ids) == tok(full, add_special_tokens=False)["input_ids"]  # no EOS added after the turn
    assert list(e.input_ids[:e.prompt_len]) == tok(prompt, add_special_tokens=False)["input_ids"]
    assert tok.decode(list(e.input_ids[:e.prompt_len])).endswith("<|im_start|>assistant\n")
    assert all(x == IGNORE for x in e.labels[:e.prompt_len]) and list(e.labels[e.prompt_len:]) == list(e.input_ids[e.prompt_len:])
    assert tok.eos_token_id in e.input_ids[e.prompt_len:]  # the template's end of turn is learned


def test_chat_template_needs_one(tiny_tokenizer, chat_tokenizer):
    with pytest.raises(InputError, match="no chat template"):
        encode(SAMPLES[0], tiny_tokenizer, "chat", 64, "response")
    tok = chat_tokenizer
    tok.chat_template = "{{ 'A:' + messages[-1]['content'] }}{% if add_generation_prompt %}{{ ' B:' }}{% endif %}"
    with pytest.raises(InputError, match="prefix"):
        encode(SAMPLES[0], tok, "chat", 64, "response")


def test_unknown_preprocessing_is_refused(tiny_tokenizer):
    with pytest.raises(InputError, match="train.preprocessing"):
        encode(SAMPLES[0], tiny_tokenizer, TPL, 64, "response", "raw")


def _mask_446(mask: torch.Tensor) -> torch.Tensor:
    """transformers 4.46's sdpa mask on CUDA, by hand: an additive float mask [B, 1, T, T] (0 = attend, the dtype's
    minimum = masked) from causal + padding, then ``_unmask_unattended``: a row that is the minimum everywhere is
    set to 0 everywhere. Returned as True = may attend."""
    B, T = mask.shape
    low = torch.finfo(torch.float32).min
    m = torch.full((B, 1, T, T), low)
    for b in range(B):
        for q in range(T):
            for k in range(q + 1):
                if mask[b, k]:
                    m[b, 0, q, k] = 0.0
            if all(m[b, 0, q, k] == low for k in range(T)):
                m[b, 0, q, :] = 0.0
    return m == 0.0


def test_legacy_unmask_mask_is_the_446_mask():
    from engine.data.encoding import legacy_unmask_mask

    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1]])
    got = legacy_unmask_mask(mask)
    assert got.shape == (3, 1, 6, 6) and got.dtype == torch.bool
    assert torch.equal(got, _mask_446(mask))
    assert got[0, 0, :3].all() and not got[0, 0, 3, 4]  # leading pads see every key; real rows stay causal


def test_pad_attention_is_recorded_on_paper_samples_and_collated(tiny_tokenizer):
    tok = tiny_tokenizer
    plain = encode(SAMPLES[0], tok, TPL, 24, "sequence", "paper")
    legacy = encode(SAMPLES[0], tok, TPL, 24, "sequence", "paper", "legacy_unmask")
    assert legacy.n_pad > 0 and legacy.unmask_pads and not plain.unmask_pads and legacy != plain
    assert not encode(SAMPLES[0], tok, TPL, 24, "response", "clean", "legacy_unmask").unmask_pads  # no leading pads
    assert collate([plain], tok.pad_token_id)["attention"].dim() == 2
    batch = collate([legacy], tok.pad_token_id)
    assert torch.equal(batch["attention"], _mask_446(batch["attention_mask"]))
    assert torch.equal(batch["attention_mask"], collate([plain], tok.pad_token_id)["attention_mask"])
    with pytest.raises(ValueError, match="mixes"):
        collate([legacy, plain], tok.pad_token_id)
    with pytest.raises(InputError, match="train.pad_attention"):
        encode(SAMPLES[0], tok, TPL, 24, "sequence", "paper", "eager")


def test_under_legacy_unmask_the_pad_terms_carry_gradient(tiny_tokenizer):
    """With the 4.46 mask the leading pads' loss terms have a LoRA gradient (q/v LoRA: only attention reaches
    them); with none they have exactly none. The real tokens' logits are the same either way."""
    from engine.model.base import load_base
    from engine.model.finetune import add_lora
    from engine.spec.run_spec import LoraSpec

    model, tok = load_base("tiny")
    model = add_lora(model, LoraSpec(r=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj")), seed=0)
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)  # B != 0: the adapter changes the attention outputs
    grads, logits = {}, {}
    for mode in ("none", "legacy_unmask"):
        e = encode(SAMPLES[0], tok, TPL, 24, "sequence", "paper", mode)
        batch = collate([e], tok.pad_token_id)
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention"]).logits
        pad_labels = batch["labels"].clone()
        pad_labels[0, e.n_pad + 1:] = IGNORE  # the terms that predict a pad (positions 1..n_pad)
        model.zero_grad()
        per_sample_loss(out, pad_labels).sum().backward()
        grads[mode] = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters() if p.requires_grad))
        logits[mode] = out[0, e.n_pad:].detach()
    assert float(grads["none"]) == 0.0 and float(grads["legacy_unmask"]) > 1e-6
    assert torch.allclose(logits["none"], logits["legacy_unmask"], atol=1e-5)
