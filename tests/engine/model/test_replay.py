"""Metagradients by replay (engine.model.replay) against slow, obvious references: central finite differences of
whole retrainings with one sample's loss weight at 1 ± eps (float64), the closed form of one SGD step, and the
sign convention (a larger score = removing the sample raises the test loss)."""

import numpy as np
import pytest
import torch

from engine.data.encoding import collate, encode, per_sample_loss
from engine.data.tasks.base import Sample
from engine.errors import InputError
from engine.model.base import load_base
from engine.model.finetune import add_lora, finetune, lora_state, set_lora_state
from engine.model.replay import Step, Trajectory, check_replayable, metagradients, record, trainable
from engine.spec.run_spec import LoraSpec, TrainSpec

CPU = torch.device("cpu")
TRAIN = [Sample(f"say the colour {c} {k}", c, c) for k, c in enumerate(["red", "green", "blue", "black"] * 2)]
TEST = [Sample("say the colour red", "red", "red"), Sample("say the colour blue 9", "blue", "blue")]
TEMPLATE = "[INST] {prompt} [/INST] {response}"


@pytest.fixture(autouse=True)
def true_float64(monkeypatch):
    """Llama's RMSNorm rounds its input to float32 whatever the model's dtype, which leaves a float64 model with
    float32's ~1e-7 relative precision: too coarse for a finite difference of a whole retraining. Here the norm
    keeps its input's dtype (the same formula), so the references below are float64 throughout."""
    from transformers.models.llama import modeling_llama

    def forward(self, h):
        return self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    monkeypatch.setattr(modeling_llama.LlamaRMSNorm, "forward", forward)


def _setup(dropout=0.0):
    model, tok = load_base("tiny", dtype=torch.float64)
    model = add_lora(model, LoraSpec(r=2, alpha=4, dropout=dropout), seed=0)
    train = [encode(s, tok, TEMPLATE, 32, "response") for s in TRAIN]
    test = [encode(s, tok, TEMPLATE, 32, "response") for s in TEST]
    return model, tok, train, test


def _test_loss(model, state, test, pad_id):
    """Each test sample's mean token loss at LoRA ``state``, eval mode (float64)."""
    set_lora_state(model, state)
    model.eval()
    with torch.no_grad():
        b = collate(test, pad_id)
        return per_sample_loss(model(input_ids=b["input_ids"], attention_mask=b["attention"]).logits,
                               b["labels"]).numpy()


def _retrained_loss(model, initial, train, test, pad_id, cfg, weights):
    set_lora_state(model, initial)
    res = finetune(model, train, pad_id, cfg, CPU, progress=False, weights=weights)
    return _test_loss(model, res.epochs[-1], test, pad_id)


@pytest.mark.parametrize("lr, dropout, clip", [(5e-3, 0.1, 0.05), (1e-5, 0.0, 0.0)],
                         ids=["adamw-dropout-clipping", "adamw-tiny-lr"])
def test_metagrad_matches_central_finite_differences(lr, dropout, clip):
    """-dL/dw_i by replay equals -(L(w_i = 1 + eps) - L(w_i = 1 - eps)) / 2 eps of two whole retrainings, for a
    few samples and both test prompts: AdamW with weight decay, a linear schedule, 2 epochs of 2 batches, LoRA
    dropout masks per sample and (in the first case) clipping that is active at every step."""
    model, tok, train, test = _setup(dropout)
    pad = tok.pad_token_id
    cfg = TrainSpec(epochs=2, batch_size=4, lr=lr, weight_decay=0.01, max_grad_norm=clip, seed=3)
    initial = lora_state(model)
    traj = record(model, train, pad, cfg, CPU, initial)
    assert len(traj.steps) == 4 and [s.count for s in traj.steps] == [1, 2, 3, 4]
    S = metagradients(model, traj, train, test, [0, 1], pad, CPU)
    assert S.shape == (2, len(train)) and np.isfinite(S).all()
    eps = 1e-4
    for i in (0, 3, 6):
        w_plus, w_minus = np.ones(len(train)), np.ones(len(train))
        w_plus[i], w_minus[i] = 1 + eps, 1 - eps
        fd = (_retrained_loss(model, initial, train, test, pad, cfg, w_plus)
              - _retrained_loss(model, initial, train, test, pad, cfg, w_minus)) / (2 * eps)
        np.testing.assert_allclose(S[:, i], -fd, rtol=1e-3, atol=1e-3 * np.abs(fd).max())


def test_record_reproduces_the_fine_tune_and_keeps_each_steps_start():
    model, tok, train, _ = _setup(0.1)
    cfg = TrainSpec(epochs=2, batch_size=3, lr=1e-2, seed=1)
    initial = lora_state(model)
    set_lora_state(model, initial)
    plain = finetune(model, train, tok.pad_token_id, cfg, CPU, progress=False)
    traj = record(model, train, tok.pad_token_id, cfg, CPU, initial)
    assert all(torch.equal(plain.epochs[-1][k], traj.final[k]) for k in plain.epochs[-1])
    assert len(traj.steps) == 2 * 3 and [len(s.chunk) for s in traj.steps] == [3, 3, 2] * 2
    assert [s.lr for s in traj.steps] == pytest.approx(plain.lrs)
    flat0 = torch.cat([initial[k].reshape(-1) for k in initial])
    assert torch.equal(torch.sort(traj.steps[0].theta).values, torch.sort(flat0).values)
    assert not traj.steps[0].m.any() and not traj.steps[0].v.any() and traj.steps[1].v.any()
    assert traj.nbytes == 6 * 3 * traj.steps[0].theta.numel() * 8


def test_one_sgd_step_equals_its_closed_form():
    """theta_1 = theta_0 - lr (1/B) sum_i w_i grad l_i(theta_0), so dL(z'; theta_1)/dw_i = -lr/B <grad L(z';
    theta_1), grad l_i(theta_0)>: the score is lr/B times that inner product, each gradient taken by its own
    autograd call here."""
    model, tok, train, test = _setup(0.0)
    pad = tok.pad_token_id
    set_lora_state(model, {k: torch.randn_like(v) * 0.1 for k, v in lora_state(model).items()})  # B != 0
    named = trainable(model)
    theta0 = [p.detach().clone() for _, p in named]
    chunk, lr = [5, 1, 2, 7], 0.3

    def grad_of(sample, at):
        with torch.no_grad():
            for (_, p), x in zip(named, at):
                p.copy_(x)
        model.zero_grad()
        b = collate([sample], pad)
        per_sample_loss(model(input_ids=b["input_ids"], attention_mask=b["attention"]).logits,
                        b["labels"])[0].backward()
        return torch.cat([p.grad.reshape(-1) for _, p in named]).clone()

    model.eval()
    per_sample = [grad_of(train[i], theta0) for i in chunk]
    step = -lr * torch.stack(per_sample).mean(0)
    flat0 = torch.cat([x.reshape(-1) for x in theta0])
    theta1 = flat0 + step
    split = list(torch.split(theta1, [p.numel() for _, p in named]))
    theta1_list = [x.view_as(p) for x, (_, p) in zip(split, named)]
    g_test = grad_of(test[0], theta1_list)
    expected = np.zeros(len(train))
    for i, g in zip(chunk, per_sample):
        expected[i] = lr / len(chunk) * float(g_test @ g)
    with torch.no_grad():
        for (_, p), x in zip(named, theta1_list):
            p.copy_(x)
    traj = Trajectory([Step(1, chunk, lr, 1, flat0.clone(), torch.zeros_like(flat0), torch.zeros_like(flat0))],
                      (0.9, 0.999), 1e-8, 0.0, 0.0, seed=0, final=lora_state(model), final_theta=theta1.clone(),
                      update="sgd")
    S = metagradients(model, traj, train, test, [0], pad, CPU)
    np.testing.assert_allclose(S[0], expected, rtol=1e-9, atol=1e-12)
    assert np.count_nonzero(S[0]) == len(chunk)  # samples outside the step's batch have no effect


def test_sign_removing_a_high_scoring_sample_raises_the_test_loss():
    """The score is -dL/dw: removing sample i (w_i 1 -> 0) changes the test loss in the direction of +S[i] (a
    first-order prediction of a step that is not small under Adam: signs here, magnitudes in the FD test), so the
    sample with the largest score raises the loss when removed and the one with the lowest lowers it."""
    model, tok, train, test = _setup(0.0)
    pad = tok.pad_token_id
    cfg = TrainSpec(epochs=1, batch_size=4, lr=1e-4, seed=0)
    initial = lora_state(model)
    traj = record(model, train, pad, cfg, CPU, initial)
    S = metagradients(model, traj, train, test, [0], pad, CPU)[0]
    base = _test_loss(model, traj.final, test, pad)[0]
    assert S.max() > 0 > S.min()
    for i in (int(np.argmax(S)), int(np.argmin(S))):
        w = np.ones(len(train))
        w[i] = 0.0
        d = _retrained_loss(model, initial, train, test, pad, cfg, w)[0] - base
        assert np.sign(d) == np.sign(S[i])


def test_base_model_dropout_is_refused():
    model, _, _, _ = _setup(0.0)
    check_replayable(model)  # LoRA dropout and none elsewhere: fine
    model.config.attention_dropout = 0.1
    with pytest.raises(InputError, match="attention_dropout"):
        check_replayable(model)
