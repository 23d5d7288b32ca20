"""Fixtures of the method tests (inputs and helpers are in _helpers.py)."""

import pytest
import torch

from engine.features.types import Features

from ._helpers import make_features


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The inputs are tiny: one intra-op thread avoids torch's thread hand-offs, which cost milliseconds per op
    when the 2 CPU cores are busy with other processes (a converging LiSSA run does thousands of ops)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def feats():
    return make_features(0)


@pytest.fixture(scope="module")
def real_features():
    """(train, test) Features of a tiny Llama with a seeded LoRA adapter (non-zero B) on a small grammars task:
    40 train samples with their K-FAC factors, 10 test samples."""
    from _models import tiny_lora

    from engine.data.encoding import encode
    from engine.data.tasks import build_task
    from engine.features.grads import sample_features

    model, tok = tiny_lora()
    task = build_task("grammars", seed=0, n_train_per_label=4, n_test_per_label=1)

    def enc(rows):
        return [encode(s, tok, "[INST] {prompt} [/INST] {response}", 64, "response") for s in rows]

    cpu = torch.device("cpu")
    tr = sample_features(model, enc(task.train), tok.pad_token_id, cpu, 8, progress=False, kfac=True)
    te = sample_features(model, enc(task.test), tok.pad_token_id, cpu, 8, progress=False)
    return (Features(grads=tr.grads, block_names=tr.block_names, kfac=tr.kfac),
            Features(grads=te.grads, block_names=te.block_names))
