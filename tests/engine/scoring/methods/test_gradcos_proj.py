import numpy as np
import pytest

from engine.scoring.methods import get_method, score_in_shards

from ._helpers import rel_err
from ._proj_helpers import projected_features
from .test_gradcos import gradcos_loop


@pytest.mark.parametrize("kind", ["rademacher", "gaussian", "orthogonal"])
def test_gradcos_proj_matches_loop(feats, kind):
    train, test = feats
    S = get_method("gradcos_proj")(train, test, proj_dim=6, proj_seed=1, proj_kind=kind)
    want = gradcos_loop(projected_features(train, 6, 1, kind), projected_features(test, 6, 1, kind))
    assert rel_err(S, want) < 1e-6  # the projection is rounded to float32
    assert np.all(np.abs(S) <= 1 + 1e-12)
    parts = np.concatenate([b for _, _, b in score_in_shards("gradcos_proj", train, test, 5, proj_dim=6, proj_seed=1,
                                                             proj_kind=kind)], axis=1)
    np.testing.assert_allclose(parts, S, rtol=1e-12, atol=1e-12)
