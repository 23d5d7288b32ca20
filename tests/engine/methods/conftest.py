"""Fixtures of the method tests (inputs and helpers are in _helpers.py)."""

import pytest
import torch

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
