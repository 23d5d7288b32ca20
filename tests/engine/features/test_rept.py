"""RepT features (engine.features.rept) equal a per-sample loop on the full model output; layer -1 is RepSim's vector."""

import pytest
import torch
from _references import loop_rept

from engine.data.encoding import encode
from engine.data.tasks.base import Sample
from engine.errors import EngineStateError, InputError
from engine.features.grads import sample_features
from engine.features.rept import rept_features

CPU = torch.device("cpu")

TPL = "[INST] {prompt} [/INST] {response}"


def _samples(tok, n=6, loss_on="sequence"):
    rows = [Sample(f"what is {i} plus {3 * i} please" + " now" * (i % 3),
                   " ".join(["answer", str(4 * i)] * (1 + i % 2)), "x") for i in range(n)]
    return [encode(s, tok, TPL, 64, loss_on) for s in rows]


@pytest.mark.parametrize("layer", [-1, 1])
def test_batched_equals_loop(lora_model, layer):
    model, tok = lora_model
    enc = _samples(tok)  # encoded with the loss on the whole sequence: RepT still uses the response loss only
    got = rept_features(model, enc, tok.pad_token_id, CPU, batch_size=4, layer=layer, progress=False)
    want = loop_rept(model, enc, layer)
    h = got.shape[1] // 2
    assert got.shape == want.shape and h == model.config.hidden_size
    for part in (slice(0, h), slice(h, None)):
        assert float(want[:, part].abs().max()) > 0
        assert float((got[:, part] - want[:, part]).abs().max() / want[:, part].abs().max()) <= 1e-5


def test_last_layer_state_is_the_repsim_vector(lora_model):
    model, tok = lora_model
    enc = _samples(tok, 4)
    got = rept_features(model, enc, tok.pad_token_id, CPU, batch_size=3, progress=False)
    reps = sample_features(model, enc, tok.pad_token_id, CPU, batch_size=3, progress=False).reps
    torch.testing.assert_close(got[:, :reps.shape[1]], reps, rtol=1e-5, atol=1e-6)


def test_bad_layer_and_train_mode(lora_model):
    model, tok = lora_model
    with pytest.raises(InputError, match="'layer' must be -1 or in 1..2, got 0"):
        rept_features(model, _samples(tok, 1), tok.pad_token_id, CPU, layer=0, progress=False)
    model.train()
    try:
        with pytest.raises(EngineStateError, match="eval"):
            rept_features(model, _samples(tok, 1), tok.pad_token_id, CPU, progress=False)
    finally:
        model.eval()
