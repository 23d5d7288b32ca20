import numpy as np
import torch

from engine.features.types import Features
from engine.scoring.methods import get_method

from ._helpers import rel_err


def test_repsim_matches_loop(feats):
    train, test = feats
    S = get_method("repsim")(train, test)
    R, T = train.reps.numpy().astype(np.float64), test.reps.numpy().astype(np.float64)
    ref = np.array([[t @ r / (np.linalg.norm(t) * np.linalg.norm(r)) for r in R] for t in T])
    assert S.shape == (test.n, train.n) and S.dtype == np.float64
    assert rel_err(S, ref) < 1e-12


def test_repsim_zero_vector_is_zero():
    train = Features(reps=torch.tensor([[1.0, 0.0], [0.0, 0.0], [-2.0, 0.0]]))
    test = Features(reps=torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
    S = get_method("repsim")(train, test)
    np.testing.assert_allclose(S, [[0.6, 0.0, -0.6], [0.0, 0.0, 0.0]], atol=1e-12)


def test_repsim_needs_reps(feats):
    import pytest

    from engine.errors import InputError

    train, test = feats
    with pytest.raises(InputError, match="reps"):
        get_method("repsim")(Features(grads=train.grads), test)
