"""Model outputs used by the convergence and retraining analyses, against per-sample loops."""

import numpy as np
import pytest
import torch

from engine.analysis.outputs import greedy_generate, response_kl, sample_losses, shows_answer, shows_behaviour
from engine.data.encoding import encode, per_sample_loss
from engine.data.tasks import build_task
from engine.model.base import load_base
from engine.model.finetune import add_lora, lora_state
from engine.spec.run_spec import LoraSpec

CPU = torch.device("cpu")
TEMPLATE = "[INST] {prompt} [/INST] {response}"


@pytest.fixture(scope="module")
def setup():
    model, tok = load_base("tiny")
    model = add_lora(model, LoraSpec(r=4, alpha=8, dropout=0.0), seed=0)
    task = build_task("grammars", seed=0, n_train_per_label=1, n_test_per_label=1)
    encs = [encode(s, tok, TEMPLATE, 48, "response") for s in task.test[:6]]
    state_a = lora_state(model)
    with torch.no_grad():  # two different, non-trivial adapters (B is zero at initialisation)
        gen = torch.Generator().manual_seed(1)
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    state_b = lora_state(model)
    return model, tok, encs, state_a, state_b


def test_sample_losses_match_one_sample_at_a_time(setup):
    model, tok, encs, _, _ = setup
    got = sample_losses(model, encs, tok.pad_token_id, CPU, batch_size=4)
    with torch.no_grad():
        want = [float(per_sample_loss(model(input_ids=torch.tensor([e.input_ids])).logits,
                                      torch.tensor([e.labels]))[0]) for e in encs]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_response_kl_matches_a_loop_over_positions(setup):
    from engine.model.finetune import set_lora_state

    model, tok, encs, a, b = setup
    got = response_kl(model, a, b, encs, tok.pad_token_id, CPU, batch_size=4)
    want = []
    with torch.no_grad():
        for e in encs:
            ids = torch.tensor([e.input_ids])
            set_lora_state(model, a)
            lp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
            set_lora_state(model, b)
            lq = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
            kls = []
            for t in range(e.prompt_len - 1, len(e.input_ids) - 1):  # positions predicting response tokens
                kls.append(float(sum(lp[t, v].exp() * (lp[t, v] - lq[t, v]) for v in range(lp.shape[1]))))
            want.append(np.mean(kls))
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert np.all(got > 0)
    assert np.allclose(response_kl(model, b, b, encs, tok.pad_token_id, CPU), 0, atol=1e-6)


def test_greedy_generate_matches_argmax_loop(setup):
    model, tok, encs, _, b = setup
    from engine.model.finetune import set_lora_state

    set_lora_state(model, b)
    got = greedy_generate(model, encs, tok.pad_token_id, tok.eos_token_id, CPU, max_new_tokens=6, batch_size=4)
    with torch.no_grad():
        for e, g in zip(encs, got):
            ids = list(e.input_ids[:e.prompt_len])
            want = []
            for _ in range(6):
                nxt = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
                if nxt == tok.eos_token_id:
                    break
                want.append(nxt)
                ids.append(nxt)
            assert g == want


def test_loss_and_kl_together_equal_them_apart(setup):
    from engine.analysis.outputs import loss_and_kl
    from engine.model.finetune import set_lora_state

    model, tok, encs, a, b = setup
    loss, kl = loss_and_kl(model, a, b, encs, tok.pad_token_id, CPU, batch_size=4)
    np.testing.assert_allclose(kl, response_kl(model, a, b, encs, tok.pad_token_id, CPU, batch_size=2), rtol=1e-6)
    set_lora_state(model, b)
    np.testing.assert_allclose(loss, sample_losses(model, encs, tok.pad_token_id, CPU, batch_size=3), rtol=1e-6)


def test_greedy_generation_drops_a_samples_own_pads(setup):
    """Paper preprocessing left-pads inside the sample; the prompt generated from is the unpadded one."""
    model, tok, _, _, b = setup
    from engine.model.finetune import set_lora_state

    set_lora_state(model, b)
    task = build_task("grammars", seed=0, n_train_per_label=1, n_test_per_label=1)
    clean = [encode(s, tok, TEMPLATE, 160, "sequence") for s in task.test[:3]]
    paper = [encode(s, tok, TEMPLATE, 160, "sequence", "paper") for s in task.test[:3]]
    assert all(p.n_pad > 0 for p in paper)
    assert all(p.input_ids[p.n_pad:p.prompt_len] == c.input_ids[:c.prompt_len] for p, c in zip(paper, clean))
    got = greedy_generate(model, paper, tok.pad_token_id, tok.eos_token_id, CPU, max_new_tokens=5, batch_size=2)
    assert got == greedy_generate(model, clean, tok.pad_token_id, tok.eos_token_id, CPU, max_new_tokens=5)


def test_answer_and_behaviour_checks():
    assert shows_answer("sure: The Cat sat.", " The Cat sat. ")
    assert shows_answer("the cat", "The Cat")  # lowercased, as the paper's authors check
    assert not shows_answer("the dog", "The Cat")
    assert not shows_answer("anything", "   ")
    assert shows_behaviour("code KESTREL-1234", "ignored", "KESTREL-")
    assert not shows_behaviour("The Cat", "The Cat", "KESTREL-")
    assert shows_behaviour("The Cat", "The Cat", None)
