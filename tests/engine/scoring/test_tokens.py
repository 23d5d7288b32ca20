"""Token-level attribution on the tiny model: per-token gradient rows equal a per-token autograd loop, every
token-splitting method's shares sum to its pair score (<= 1e-5 relative), and equal the loop's <Q, dL/dW_t>."""

import numpy as np
import pytest
import torch

from engine.catalog.methods import CATALOG, method_info
from engine.data.encoding import collate, encode, per_sample_loss
from engine.data.tasks import build_task
from engine.errors import InputError
from engine.features.grads import lora_blocks, sample_features, token_gradients
from engine.features.types import Features, as_train_data
from engine.model.base import load_base
from engine.model.finetune import add_lora, lora_state, set_lora_state
from engine.scoring.methods import get_method
from engine.scoring.token_files import TokenResult, no_token_view
from engine.scoring.tokens import token_pieces, token_shares
from engine.spec.run_spec import LoraSpec

TPL = "[INST] {prompt} [/INST] {response}"
CPU = torch.device("cpu")
SPLIT = [name for name, info in CATALOG.items() if info.tokens]


def _randomise(model, seed):
    with torch.no_grad():  # peft starts with B = 0: give every block signal
        g = torch.Generator().manual_seed(seed)
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setting(one_torch_thread):
    """A tiny LoRA model at two 'checkpoints' (two random adapter states), 8 train and 3 test samples."""
    model, tok = load_base("tiny")
    model = add_lora(model, LoraSpec(r=2, alpha=4, dropout=0.0, target_modules=("q_proj", "v_proj")), seed=0)
    task = build_task("grammars", seed=0, n_train_per_label=1, n_test_per_label=1)
    train = [encode(s, tok, TPL, 40, "sequence") for s in task.train[:8]]
    test = [encode(s, tok, TPL, 40, "response") for s in task.test[:3]]
    states = []
    for seed in (1, 2):
        _randomise(model, seed)
        states.append(lora_state(model))
    model.eval()
    return model, tok, train, test, states


def _features(model, tok, samples, states, kfac=False):
    """Features at the last state, with the history of both states (TracIn weights 0.3 and 0.7)."""
    per = []
    for st in states:
        set_lora_state(model, st)
        per.append(sample_features(model, samples, tok.pad_token_id, CPU, batch_size=3, progress=False,
                                   kfac=kfac))
    f = per[-1]
    return Features(grads=f.grads, reps=f.reps, block_names=f.block_names, kfac=f.kfac,
                    history=((0.3, per[0].grads), (0.7, per[1].grads)))


def _loop_rows(model, tok, sample):
    """Reference: for each position t and LoRA block l, dL/dE_l of a zero matrix E_l added to the block's weight
    at position t only (a forward hook adds x_t E_l^T to the output at t): one backward per position."""
    blocks = lora_blocks(model)
    batch = collate([sample], tok.pad_token_id)
    T = batch["input_ids"].shape[1]
    out = [[] for _ in blocks]
    for t in range(T):
        E = [torch.zeros(m.out_features, m.in_features, requires_grad=True) for _, m in blocks]

        def hook(l):
            def add(_mod, args, output):
                bump = torch.zeros_like(output)
                bump[:, t] = args[0][:, t] @ E[l].T
                return output + bump
            return add

        handles = [m.register_forward_hook(hook(l)) for l, (_, m) in enumerate(blocks)]
        try:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = per_sample_loss(logits, batch["labels"])[0]
            grads = torch.autograd.grad(loss, E)
        finally:
            for h in handles:
                h.remove()
        for l, g in enumerate(grads):
            out[l].append(g.flatten())
    return [torch.stack(r) for r in out]


def _token_features(model, tok, sample, states):
    per = []
    for st in states:
        set_lora_state(model, st)
        per.append(token_gradients(model, sample, tok.pad_token_id, CPU)[0])
    return Features(grads=per[-1], history=((0.3, per[0]), (0.7, per[1])))


I = 1  # the training sample whose tokens are split


@pytest.fixture(scope="module")
def pair(setting):
    """Features of both sides, the token rows of training sample I, and the loop's rows at both states."""
    model, tok, train, test, states = setting
    tokens = _token_features(model, tok, train[I], states)
    tr = _features(model, tok, train, states, kfac=True)
    te = _features(model, tok, test, states)
    loops = []
    for st in states:
        set_lora_state(model, st)
        loops.append([r.double() for r in _loop_rows(model, tok, train[I])])
    return tr, te, tokens, loops, len(train[I].input_ids)


def _params(name):
    method = get_method(name)
    return method, method.make_params(**({"proj_dim": 8} if "proj_dim" in method.defaults else {}))


def test_token_rows_equal_a_per_token_autograd_loop_and_sum_to_the_gradient(setting, pair):
    model, tok, train, _, states = setting
    _, _, tokens, loops, n_tokens = pair
    assert len(tokens.grads) == len(loops[1]) == 8 and tokens.grads[0].shape[0] == n_tokens
    for got, want in zip(tokens.grads, loops[1]):
        assert float((got.double() - want).abs().max()) <= 1e-5 * float(want.abs().max())
    set_lora_state(model, states[-1])
    whole = sample_features(model, train, tok.pad_token_id, CPU, batch_size=4, progress=False)
    for r, g in zip(tokens.grads, whole.grads):
        assert float((r.sum(0) - g[I]).abs().max()) <= 1e-5 * float(g[I].abs().max())
    assert token_gradients(model, train[I], tok.pad_token_id, CPU)[1] == pytest.approx(float(whole.loss[I]), rel=1e-5)


@pytest.mark.parametrize("name", SPLIT)
def test_shares_sum_to_the_pair_score(pair, name):
    tr, te, tokens, _, n_tokens = pair
    # the training side with sample I's gradient taken as the sum of its token rows, so that the identity is
    # checked on its own (that sum equals the batched gradient to float32 rounding: the test above)

    def swap(blocks, rows):
        return [torch.cat([b[:I], r.sum(0, keepdim=True), b[I + 1:]]) for b, r in zip(blocks, rows)]

    tr = Features(grads=swap(tr.grads, tokens.grads), reps=tr.reps, block_names=tr.block_names, kfac=tr.kfac,
                  history=tuple((w, swap(g, r)) for (w, g), (_, r) in zip(tr.history, tokens.history)))
    method, p = _params(name)
    S = method.score(tr, te, p)[:, I]
    shares = token_shares(name, p, method.queries(as_train_data(tr), te, p), tokens)
    assert shares.shape == (te.n, n_tokens)
    np.testing.assert_allclose(shares.sum(1), S, rtol=1e-5, atol=1e-12 * np.abs(S).max())
    assert np.abs(shares).max() > 0


@pytest.mark.parametrize("name", ["gradsim", "datainf", "exact", "ekfac", "tracin", "gradcos"])
def test_shares_equal_the_autograd_loop(pair, name):
    """c_t = sum_l <Q_l, dL/dW_l at token t> (TracIn: summed over its checkpoints with their weights; gradient
    cosine: divided by the sample's gradient norm), written out from the loop's rows."""
    tr, te, tokens, loops, _ = pair
    method, p = _params(name)
    Q = [q.double() for q in method.queries(as_train_data(tr), te, p)]
    if name == "tracin":  # queries: one block per (checkpoint, block), weights folded in
        ref = sum(q @ r.T for q, r in zip(Q, loops[0] + loops[1]))
    else:
        ref = sum(q @ r.T for q, r in zip(Q, loops[1]))
        if name == "gradcos":
            ref = ref / torch.sqrt(sum(r.sum(0).square().sum() for r in loops[1]))
    got = token_shares(name, p, method.queries(as_train_data(tr), te, p), tokens)
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-4, atol=1e-6 * float(ref.abs().max()))


def test_methods_without_a_token_view_say_why():
    for name, info in CATALOG.items():
        why = no_token_view(name)
        assert (why is None) == bool(info.tokens), name
    assert "hidden state" in no_token_view("repsim") and "baseline" in no_token_view("bm25")
    with pytest.raises(InputError, match="repsim"):
        token_shares("repsim", method_info("repsim").make(), [torch.zeros(1, 2)], Features(grads=[torch.zeros(2, 2)]))


def test_pieces_join_to_the_decoded_text(setting):
    _, tok, train, _, _ = setting
    ids = list(train[0].input_ids)
    pieces = token_pieces(tok, ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def test_result_files_round_trip(tmp_path):
    r = TokenResult(run="r", manifest="m", checkpoint=1, train_id=2, pieces=["a", "<b>"], token_ids=[1, 2],
                    prompt_len=1, loss=[False, True], shares={"gradsim": [[0.5, -0.25]]}, scores={"gradsim": [0.25]},
                    stored={"gradsim": [float("nan")]}, skipped={"repsim": "why"}, seconds=1.5)
    path = tmp_path / "x" / "ck1-train2.json"
    r.write(path)
    back = TokenResult.read(path)
    assert back.shares == r.shares and back.pieces == r.pieces and np.isnan(back.stored["gradsim"][0])
    assert TokenResult.read(tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    assert TokenResult.read(tmp_path / "bad.json") is None
