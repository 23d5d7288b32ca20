"""Every method streams over training shards: the scores from many small shards equal one shard's, and the Gram
factor that exact / LiSSA / paper LiSSA read when n >= d gives the numbers of the full gradient matrix."""

import numpy as np
import pytest
import torch

from engine.catalog.methods import CATALOG
from engine.features.projection import project_grads
from engine.features.types import Features, TrainData
from engine.scoring.methods import get_method, score_in_shards
from engine.scoring.methods._common import gram_factor, prepare_blocks
from engine.scoring.methods.exact import precondition_exact
from engine.scoring.methods.lissa_paper import precondition_lissa_paper

from ._helpers import make_features, rel_err
from ._kronecker_helpers import token_features


def _inputs(name, seed=0):
    """Inputs the method reads: gradients with reps and history, token-level K-FAC inputs, or RepT parts."""
    if "kfac" in CATALOG[name].reads:
        return token_features(seed, n=30)
    if "rept" in CATALOG[name].reads:
        gen = torch.Generator().manual_seed(seed + 1)
        return Features(rept=torch.randn(30, 6, generator=gen)), Features(rept=torch.randn(4, 6, generator=gen))
    train, test = make_features(seed, n=30, dims=(5, 20, 40))
    if "text" in CATALOG[name].reads:  # the BM25 baseline: texts that share words to a varying degree
        words = "red green blue cat dog sun moon tree rock wave".split()
        text = lambda i: " ".join(words[(i * k) % len(words)] for k in range(1, 2 + i % 4))  # noqa: E731
        return (Features(texts=tuple(text(i) for i in range(30))),
                Features(texts=tuple(text(i + 3) for i in range(4))))
    return train, test


@pytest.mark.parametrize("name", sorted(CATALOG))
@pytest.mark.parametrize("shard_size", [1, 7, 30])
def test_many_shards_equal_one(name, shard_size):
    train, test = _inputs(name)
    params = {"proj_dim": 8} if "proj" in CATALOG[name].reads else {}
    whole = get_method(name)(train, test, **params)
    blocks = list(score_in_shards(name, train, test, shard_size, **params))
    assert [b[0] for b in blocks] == list(range(0, train.n, shard_size))
    got = np.concatenate([b[2] for b in blocks], axis=1)
    assert got.shape == whole.shape == (test.n, train.n)
    assert rel_err(got, whole) < 1e-10, name


def test_gram_factor_reproduces_the_gram_matrix_and_the_damping():
    train, _ = make_features(3, n=50, dims=(5, 20, 80))  # n >= d for 5 and 20, n < d for 80
    data = TrainData.of(train, shard_size=9)
    for l, G in enumerate(train.grads):
        C = gram_factor(data, l, torch.float64, torch.device("cpu"))
        G = G.double()
        assert C.shape == (min(50, G.shape[1]), G.shape[1])
        np.testing.assert_allclose(C.T @ C / C.shape[0], G.T @ G / 50, rtol=1e-10, atol=1e-12)
        assert float((C * C).sum() / C.shape[0]) == pytest.approx(float((G * G).sum() / 50), rel=1e-12)


@pytest.mark.parametrize("name, precondition", [("exact", precondition_exact),
                                                ("lissa_paper", precondition_lissa_paper)])
def test_gram_factor_path_equals_the_full_gradients(name, precondition):
    """With n >= d the streamed query uses a [d, d] factor, not G: the queries equal the in-memory ones on G."""
    train, test = make_features(4, n=60, dims=(5, 20, 40))
    p = get_method(name).make_params()
    want = prepare_blocks(train, test, precondition, lambda_c=p.lambda_c)  # the preconditioner on all of G
    got = get_method(name).queries(TrainData.of(train, shard_size=11), test, p)
    for g, w in zip(got, want):
        assert rel_err(g, w) < 1e-8


def test_a_degenerate_block_uses_the_eigendecomposition():
    """A block whose training gradients are all zero (LoRA A while B = 0) has a singular Gram matrix."""
    train, test = make_features(5, n=30, dims=(5, 20))
    train = Features(grads=[torch.zeros_like(train.grads[0]), train.grads[1]])
    C = gram_factor(TrainData.of(train, 7), 0, torch.float64, torch.device("cpu"))
    assert torch.count_nonzero(C) == 0
    S = get_method("exact")(train, test)
    assert np.isfinite(S).all()


def test_projected_methods_read_a_given_projection_shard_by_shard():
    train, test = make_features(6, n=25, dims=(5, 20, 40))
    pj = project_grads(train.grads, 8, seed=2)
    only_proj = Features(proj=pj)
    want = get_method("datainf_proj")(train, test, proj_dim=8, proj_seed=2)
    got = np.concatenate([b for _, _, b in score_in_shards("datainf_proj", only_proj, test, 6, proj_dim=8,
                                                           proj_seed=2)], axis=1)
    assert rel_err(got, want) < 1e-10


@pytest.mark.parametrize("name", ["ekfac", "kfac", "exact", "lissa", "datainf"])
def test_released_statistics_are_recomputed_to_the_same_scores(name):
    """release_statistics forgets what the methods kept (memo, eigenbases); asked again, a method recomputes them
    and scores the same."""
    from engine.scoring.methods import release_statistics
    from engine.scoring.methods._kronecker import _EIGEN

    train, test = token_features(5, n=30)
    data = TrainData.of(train, shard_size=7)
    before = np.concatenate([b[2] for b in score_in_shards(name, data, test)], axis=1)
    assert data.memo or data.kfac in _EIGEN
    release_statistics(data)
    assert not data.memo and data.kfac not in _EIGEN
    after = np.concatenate([b[2] for b in score_in_shards(name, data, test)], axis=1)
    np.testing.assert_array_equal(after, before)


def test_lazy_blocks_are_made_when_read():
    from engine.scoring.methods._common import LazyBlocks

    made = []
    blocks = LazyBlocks(3, lambda l: made.append(l) or torch.full((2, 1), float(l)))
    assert len(blocks) == 3 and made == []
    assert float(blocks[-1][0, 0]) == 2.0 and made == [2]
    assert [float(b[0, 0]) for b in blocks] == [0.0, 1.0, 2.0] and made == [2, 0, 1, 2]
    with pytest.raises(IndexError):
        blocks[3]


def _kept_families(data) -> set[str]:
    from engine.scoring.methods import _MEMO_FAMILY
    from engine.scoring.methods._kronecker import _EIGEN

    found = {_MEMO_FAMILY[k[0]] for k in data.memo if isinstance(k, tuple) and k[0] in _MEMO_FAMILY}
    found |= {"kronecker"} if data.kfac in _EIGEN else set()
    return found.union(*(_kept_families(v) for v in data.views.values()))  # projections keep their own


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_a_method_declares_the_statistics_it_keeps(name):
    """What a method leaves kept after scoring is what it declares (Method.keeps): the pipeline frees a family
    once no method still to come declares it, so an undeclared one would be freed under its user's feet (and
    recomputed), a declared one never made would be kept for nothing."""
    train, test = _inputs(name)
    if not isinstance(train, Features) or not train.grads:
        assert get_method(name).keeps == frozenset()  # reads no gradients: keeps no gradient statistics
        return
    data = TrainData.of(train, shard_size=7)
    params = {"proj_dim": 8} if "proj" in CATALOG[name].reads else {}
    for _ in score_in_shards(name, data, test, **params):
        pass
    assert _kept_families(data) == set(get_method(name).keeps)


def test_statistics_are_released_once_no_method_to_come_keeps_them():
    from engine.scoring.methods import release_statistics

    train, test = token_features(5, n=30)
    data = TrainData.of(train, shard_size=7)
    scores = {}
    for name in ("datainf", "exact", "ekfac"):
        scores[name] = np.concatenate([b[2] for b in score_in_shards(name, data, test)], axis=1)
    assert _kept_families(data) == {"gram", "kronecker"}
    small = [k for k in data.memo if k[0] == "sq_norm_sum"]  # DataInf's damping sums: small, never released early
    assert small
    release_statistics(data, unless_kept_by=[get_method("kfac"), get_method("gradsim")])
    assert _kept_families(data) == {"kronecker"} and all(k in data.memo for k in small)
    release_statistics(data, unless_kept_by=[get_method("lissa")])  # a Gram user to come keeps nothing else
    assert _kept_families(data) == set() and all(k in data.memo for k in small)
    for name, want in scores.items():  # asked again, recomputed to the same scores
        got = np.concatenate([b[2] for b in score_in_shards(name, data, test)], axis=1)
        np.testing.assert_array_equal(got, want)
    release_statistics(data)  # everything
    assert not data.memo and _kept_families(data) == set()


def test_a_projection_still_scores_after_a_full_release():
    """release_statistics(train) leaves a projection view's own definition (its memo's "widths") in place: the
    run releases everything before the checks, and an analysis may score a projected method again after it."""
    from engine.scoring.methods import release_statistics

    train, test = make_features(2, n=30, dims=(5, 20, 40))
    data = TrainData.of(train, shard_size=7)
    run = lambda: np.concatenate([b[2] for b in score_in_shards("datainf_proj", data, test, proj_dim=8)], axis=1)  # noqa: E731
    before = run()
    assert data.views
    release_statistics(data)
    np.testing.assert_array_equal(run(), before)
