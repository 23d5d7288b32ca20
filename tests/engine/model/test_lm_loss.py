"""The batch loss from the decoder and a chunked head equals the model's own loss, value and gradient.

References: the model's full forward (``model(...).logits``) and a Python loop over samples and positions computing
-log softmax(logits)[next token] from the formula; chunking forced by a tiny ``chunk_mb``.
"""

import math

import pytest
import torch

from engine.data.encoding import IGNORE, collate, encode, per_sample_loss
from engine.data.tasks.base import Sample
from engine.model.base import load_base
from engine.model.finetune import add_lora
from engine.model.lm_loss import batch_loss, head_loss
from engine.spec.run_spec import LoraSpec

DATA = [Sample("say the colour red", "red", "a"), Sample("name a blue thing please", "the sea, mostly", "b"),
        Sample("x", "a much longer response with many tokens in it", "a")]


@pytest.fixture(scope="module")
def lm():
    model, tok = load_base("tiny", dtype=torch.float64)
    model = add_lora(model, LoraSpec(r=4, alpha=8, dropout=0.0), seed=0)
    with torch.no_grad():  # a trained-looking adapter: B = 0 at init would hide the LoRA path
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    model.eval()
    return model, tok


def _batch(tok, loss_on="response"):
    return collate([encode(s, tok, "[INST] {prompt} [/INST] {response}", 48, loss_on) for s in DATA],
                   tok.pad_token_id)


def _loop_loss(logits: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Per sample, the mean over its loss positions t of -log softmax(logits[t])[labels[t + 1]]: one term at a time."""
    out = []
    for b in range(labels.shape[0]):
        terms = []
        for t in range(labels.shape[1] - 1):
            y = int(labels[b, t + 1])
            if y == IGNORE:
                continue
            row = logits[b, t].detach().double()
            terms.append(float(torch.logsumexp(row, 0) - row[y]))
        out.append(sum(terms) / len(terms) if terms else 0.0)
    return out


@pytest.mark.parametrize("loss_on", ["response", "sequence"])
@pytest.mark.parametrize("chunk_mb", [64, 0])  # 0: a chunk of one row at a time
def test_value_equals_the_models_own_loss_and_the_loop(lm, loss_on, chunk_mb):
    model, tok = lm
    batch = _batch(tok, loss_on)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention"]).logits
    decoder = model.get_base_model().get_decoder()
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention"]).last_hidden_state
    got = head_loss(hidden, model.get_base_model().get_output_embeddings(), batch["labels"], chunk_mb=chunk_mb)
    assert got.dtype == torch.float64
    assert got.tolist() == pytest.approx(_loop_loss(logits, batch["labels"]), rel=1e-12)
    assert got.tolist() == pytest.approx(per_sample_loss(logits, batch["labels"]).tolist(), rel=1e-12)
    full, _ = batch_loss(model, batch)
    assert full.tolist() == pytest.approx(got.tolist(), rel=1e-12)


def test_gradient_through_checkpointed_chunks_equals_the_full_forward(lm):
    """The recomputed chunks give the LoRA gradient (and, for the replay, the second derivative) of the model's
    own loss."""
    model, tok = lm
    batch = _batch(tok, "sequence")
    lora = [p for n, p in model.named_parameters() if "lora_" in n]

    def grads(loss_fn, second: bool):
        w = torch.tensor([0.7, 1.0, 1.3], dtype=torch.float64, requires_grad=True)
        loss = (loss_fn() * w).sum()
        g = torch.autograd.grad(loss, lora, create_graph=second)
        if not second:
            return [x.detach() for x in g]
        return torch.autograd.grad(sum((x * x).sum() for x in g), w)[0]

    def ours():
        decoder = model.get_base_model().get_decoder()
        hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention"]).last_hidden_state
        return head_loss(hidden, model.get_base_model().get_output_embeddings(), batch["labels"], chunk_mb=0)

    def reference():
        return per_sample_loss(model(input_ids=batch["input_ids"], attention_mask=batch["attention"]).logits,
                               batch["labels"])

    for a, b in zip(grads(ours, False), grads(reference, False)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):  # the fused kernels have no double backward (the replay does the same)
        torch.testing.assert_close(grads(ours, True), grads(reference, True), rtol=1e-10, atol=1e-14)


def test_scale_and_softcap_follow_the_formula(lm):
    model, tok = lm
    batch = _batch(tok)
    head = model.get_base_model().get_output_embeddings()
    hidden = model.get_base_model().get_decoder()(input_ids=batch["input_ids"],
                                                  attention_mask=batch["attention"]).last_hidden_state
    logits = head(hidden)
    capped = torch.tanh(logits * 0.5 / 3.0) * 3.0  # Gemma-2 style: scale, then softcap * tanh(x / softcap)
    got = head_loss(hidden, head, batch["labels"], scale=0.5, softcap=3.0, chunk_mb=0)
    assert got.tolist() == pytest.approx(_loop_loss(capped, batch["labels"]), rel=1e-12)
    assert not math.isclose(got[0], head_loss(hidden, head, batch["labels"])[0], rel_tol=1e-6)


def test_replay_params_must_live_in_the_decoder(lm):
    model, tok = lm
    batch = _batch(tok)
    named = {n: p for n, p in model.named_parameters() if "lora_" in n}
    same, _ = batch_loss(model, batch, {n: p.detach().clone() for n, p in named.items()})
    torch.testing.assert_close(same, batch_loss(model, batch)[0], rtol=0, atol=0)
    head = model.get_base_model().get_output_embeddings().weight  # tied to the embedding in the tiny model
    with pytest.raises(ValueError, match="outside the decoder"):
        batch_loss(model, batch, {"base_model.model.lm_head.weight": head.detach()})
