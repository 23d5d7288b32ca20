"""Self-influence s(z_i, z_i) without the n x n matrix: equal to explicit formulas (GradSim's squared norm, the
exact iHVP with an explicit inverse, TracIn's weighted norms) and to the diagonal of every method's full
train-against-train score matrix, whatever the chunk size."""

import numpy as np
import pytest
import torch
from methods._helpers import make_features, np_damping
from methods._kronecker_helpers import token_features

from engine.catalog.methods import CATALOG
from engine.features.types import Features, TrainData, slice_features
from engine.scoring.methods import get_method
from engine.scoring.self_influence import self_influence

MEANINGFUL = [name for name, info in CATALOG.items() if info.has_self_influence]


@pytest.fixture(scope="module")
def train():
    """Gradients with a history (TracIn) and K-FAC factors (EK-FAC, K-FAC) over the same samples."""
    f, _ = make_features(3, n=12)
    kf, _ = token_features(3, n=12)
    return Features(grads=kf.grads, reps=f.reps, block_names=kf.block_names, kfac=kf.kfac,
                    history=((0.4, f.grads), (0.6, kf.grads)))


def test_gradsim_exact_and_tracin_equal_their_formulas(train):
    G = [g.numpy().astype(np.float64) for g in train.grads]
    n = G[0].shape[0]
    gradsim = [sum(float(g[i] @ g[i]) for g in G) for i in range(n)]
    np.testing.assert_allclose(self_influence("gradsim", get_method("gradsim").make_params(), train), gradsim,
                               rtol=1e-10)
    exact = np.zeros(n)
    for g in G:
        H_inv = np.linalg.inv(g.T @ g / n + np_damping(g) * np.eye(g.shape[1]))
        exact += [g[i] @ H_inv @ g[i] for i in range(n)]
    np.testing.assert_allclose(self_influence("exact", get_method("exact").make_params(), train), exact, rtol=1e-7)
    tracin = np.zeros(n)
    for w, gs in train.history:
        tracin += w * np.array([sum(float(g[i].double() @ g[i].double()) for g in gs) for i in range(n)])
    np.testing.assert_allclose(self_influence("tracin", get_method("tracin").make_params(), train), tracin,
                               rtol=1e-10)


@pytest.mark.parametrize("name", MEANINGFUL)
@pytest.mark.parametrize("chunk", [1, 5, 100])
def test_equals_the_diagonal_of_the_full_matrix(train, name, chunk):
    method = get_method(name)
    p = method.make_params(**({"proj_dim": 4} if "proj_dim" in method.defaults else {}))
    full = method.score(train, slice_features(train, 0, train.n), p)
    got = self_influence(name, p, train, chunk=chunk)
    np.testing.assert_allclose(got, np.diag(full), rtol=1e-8, atol=1e-12 * np.abs(full).max())


def test_only_methods_whose_self_score_says_something():
    assert {"gradsim", "datainf", "exact", "ekfac", "tracin", "lissa"} <= set(MEANINGFUL)
    for name in ("gradcos", "gradcos_proj", "repsim", "rept", "random", "bm25"):  # 1 for every sample, or none
        assert name not in MEANINGFUL


def test_slices_carry_every_per_sample_feature(train):
    part = slice_features(Features(grads=train.grads, reps=train.reps, history=train.history, kfac=train.kfac,
                                   texts=tuple(map(str, range(12)))), 3, 7)
    assert part.n == 4 and part.texts == ("3", "4", "5", "6")
    assert torch.equal(part.grads[1], train.grads[1][3:7]) and torch.equal(part.history[0][1][0], train.history[0][1][0][3:7])


@pytest.mark.parametrize("name", ["gradsim", "datainf", "exact", "ekfac", "tracin"])
def test_shards_and_processes_give_the_same_rows(train, name):
    """In shards of 5 rows, the same values; a process fills only its own shards' rows."""
    p = get_method(name).make_params()
    whole = self_influence(name, p, train)
    sharded = TrainData.of(train, 5)
    np.testing.assert_allclose(self_influence(name, p, sharded), whole, rtol=1e-10)
    if name not in ("gradsim", "tracin"):
        return
    # one process holding shard 1 only: GradSim and TracIn need no statistics of the other shards, so its rows
    # are exact on their own and the rest stay 0 (the pipeline sums the processes' vectors)
    def only_shard_1(td):
        return TrainData(td.n, td.bounds[1:2], lambda i, blocks, proj_key=None: td.loader(1, blocks), td.widths,
                         td.block_names, td.kfac, td.device)

    mine = only_shard_1(sharded)
    mine.history = [(w, only_shard_1(h)) for w, h in sharded.history]
    part = self_influence(name, p, mine)
    a, b = sharded.bounds[1]
    np.testing.assert_allclose(part[a:b], whole[a:b], rtol=1e-10)
    assert not part[:a].any() and not part[b:].any()
