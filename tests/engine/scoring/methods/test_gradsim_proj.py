import numpy as np
import pytest

from engine.errors import InputError
from engine.features.projection import project_grads
from engine.features.types import Features
from engine.scoring.methods import get_method, score_in_shards

from ._helpers import rel_err
from ._proj_helpers import projected_features
from .test_gradsim import gradsim_loop


@pytest.mark.parametrize("k", [3, 16])
def test_gradsim_proj_matches_loop(feats, k):
    train, test = feats
    S = get_method("gradsim_proj")(train, test, proj_dim=k, proj_seed=7)
    want = gradsim_loop(projected_features(train, k, 7), projected_features(test, k, 7))
    assert rel_err(S, want) < 1e-6  # the projection is rounded to float32


def test_wide_projection_is_exact(feats):
    train, test = feats  # every block has d <= 40: kept as it is
    np.testing.assert_allclose(get_method("gradsim_proj")(train, test, proj_dim=40), get_method("gradsim")(train, test),
                               rtol=1e-12)


def test_precomputed_projection_is_used_and_checked(feats):
    train, test = feats
    direct = get_method("gradsim_proj")(train, test, proj_dim=8, proj_seed=3)
    tp, sp = project_grads(train.grads, 8, 3), project_grads(test.grads, 8, 3)
    only = Features(proj=tp, block_names=train.block_names), Features(proj=sp)
    np.testing.assert_allclose(get_method("gradsim_proj")(*only, proj_dim=8, proj_seed=3), direct, rtol=1e-12)
    parts = np.concatenate([b for _, _, b in score_in_shards("gradsim_proj", *only, 5, proj_dim=8, proj_seed=3)],
                           axis=1)
    np.testing.assert_allclose(parts, direct, rtol=1e-12)
    with pytest.raises(InputError, match="proj_seed"):
        get_method("gradsim_proj")(*only, proj_dim=8, proj_seed=4)  # another seed, and no gradients to project


def test_bad_projection_parameters(feats):
    for bad in ({"proj_dim": 0}, {"proj_dim": 2.5}, {"proj_seed": -1}, {"proj_kind": "sparse"}):
        with pytest.raises(InputError, match="proj_"):
            get_method("gradsim_proj")(*feats, **bad)


def test_projected_methods_are_registered():
    from engine.scoring.methods import REGISTRY

    for name in ("gradsim_proj", "gradcos_proj", "datainf_proj"):
        m = REGISTRY[name]
        assert m.needs == {"proj"} and m.description and m.score.__doc__ and m.queries and m.train_side
        assert {"proj_dim", "proj_seed", "proj_kind", "dtype", "device"} <= set(m.defaults)
    assert "lambda_c" in REGISTRY["datainf_proj"].defaults
