"""Seeded per-block projections: deterministic, unbiased, exact when orthogonal at k = d; error shrinks with k."""

import numpy as np
import pytest
import torch
from _features import structured_features

from engine.errors import InputError
from engine.features.projection import KINDS, Projector, merge_projected, project_grads, projection_matrix
from engine.features.types import Features
from engine.scoring.methods import get_method


@pytest.fixture(scope="module")
def data():
    return structured_features(0, 40), structured_features(1, 8)


@pytest.mark.parametrize("kind", KINDS)
def test_matrix_is_deterministic_and_seeded(kind):
    P = projection_matrix(30, 7, seed=3, block=2, kind=kind)
    assert P.shape == (7, 30) and P.dtype == torch.float32
    assert torch.equal(P, projection_matrix(30, 7, seed=3, block=2, kind=kind))
    assert not torch.equal(P, projection_matrix(30, 7, seed=4, block=2, kind=kind))
    assert not torch.equal(P, projection_matrix(30, 7, seed=3, block=1, kind=kind))


def test_rademacher_entries_and_unbiased_gram():
    P = projection_matrix(20, 16, seed=0)
    assert set(torch.unique(P * 4).tolist()) == {-1.0, 1.0}
    # E[P^T P] = I: the mean over many seeds is close to the identity
    M = sum(projection_matrix(20, 16, seed=s).T @ projection_matrix(20, 16, seed=s) for s in range(300)) / 300
    assert float((M - torch.eye(20)).abs().max()) < 0.12


def test_orthogonal_at_full_width_preserves_every_score(data):
    train, test = data
    exact = {m: get_method(m)(train, test) for m in ("gradsim", "gradcos", "datainf")}
    mats = [projection_matrix(g.shape[1], g.shape[1], seed=5, block=l, kind="orthogonal") for l, g in
            enumerate(train.grads)]
    for P in mats:
        torch.testing.assert_close(P @ P.T, torch.eye(P.shape[0]), atol=1e-5, rtol=0)
    rot = [Features(grads=[g @ P.T for g, P in zip(f.grads, mats)]) for f in (train, test)]
    for m, S in exact.items():
        np.testing.assert_allclose(get_method(m)(*rot), S, rtol=1e-4, atol=1e-5 * np.abs(S).max())


def test_blocks_no_wider_than_k_are_kept(data):
    train, test = data
    p = Projector([48, 160], 64)
    assert p.out_widths() == (48, 64) and p.matrix(0) is None
    out = project_grads(train.grads, 64)
    assert torch.equal(out.blocks[0], train.grads[0]) and out.blocks[1].shape == (40, 64)
    for m in ("gradsim", "gradcos", "datainf"):
        np.testing.assert_allclose(get_method(f"{m}_proj")(train, test, proj_dim=160), get_method(m)(train, test),
                                   rtol=1e-10)


def test_shards_project_like_the_whole(data):
    train, _ = data
    whole = project_grads(train.grads, 16, seed=2)
    parts = merge_projected([project_grads([g[i:i + 7] for g in train.grads], 16, seed=2) for i in range(0, 40, 7)])
    for a, b in zip(whole.blocks, parts.blocks):
        assert torch.equal(a, b)
    with pytest.raises(ValueError):
        merge_projected([whole, project_grads(train.grads, 16, seed=3)])


def test_bad_parameters():
    with pytest.raises(InputError, match="proj_dim"):
        Projector([10], 0)
    with pytest.raises(InputError, match="k <= d"):
        projection_matrix(4, 5, seed=0)
    with pytest.raises(InputError, match="shape"):
        Projector([10], 4).project_block(0, torch.zeros(2, 9))


