import numpy as np
import pytest
import torch

from engine.errors import InputError
from engine.features.types import Features
from engine.scoring.methods import REGISTRY, get_method, score_in_shards

BUILTIN = {"gradsim", "gradcos", "tracin", "datainf", "exact", "lissa", "lissa_paper", "repsim"}


def test_registry_contents():
    assert BUILTIN <= set(REGISTRY)
    for name in BUILTIN:
        m = REGISTRY[name]
        assert m.name == name and m.description and m.score.__doc__
        assert m.queries is not None and m.train_side is not None
        # TracIn reads the gradients of every checkpoint up to the scored one (the plan's "history" feature)
        assert m.needs == ({"reps"} if name == "repsim" else {"history"} if name == "tracin" else {"grads"})
        assert m.defaults["dtype"] == "float64"


def test_unknown_method_lists_valid_names():
    with pytest.raises(InputError) as e:
        get_method("nope")
    for name in BUILTIN:
        assert name in str(e.value)


def test_unknown_parameter_is_an_input_error(feats):
    with pytest.raises(InputError, match="lambda_c"):
        get_method("datainf")(*feats, lamda_c=3)
    with pytest.raises(InputError, match="no parameter"):
        list(score_in_shards("gradsim", *feats, 5, lambda_c=3))


def test_bad_dtype(feats):
    with pytest.raises(InputError, match="dtype"):
        get_method("gradsim")(*feats, dtype="float16")


@pytest.mark.parametrize("name", sorted(BUILTIN))
@pytest.mark.parametrize("shard_size", [1, 5, 12, 100])
def test_shards_concatenate_to_full(feats, name, shard_size):
    train, test = feats
    params = {"iterations": 40, "scale": 60.0} if name == "lissa" else {}
    full = get_method(name)(train, test, **params)
    parts = list(score_in_shards(name, train, test, shard_size, **params))
    starts = [p[0] for p in parts]
    assert starts == list(range(0, train.n, shard_size))
    assert parts[-1][1] == train.n
    for start, stop, block in parts:
        assert block.shape == (test.n, stop - start) and block.dtype == np.float64
    np.testing.assert_allclose(np.concatenate([p[2] for p in parts], axis=1), full, rtol=1e-12, atol=1e-12)


def test_shard_size_must_be_positive(feats):
    with pytest.raises(InputError, match="shard_size"):
        list(score_in_shards("gradsim", *feats, 0))


def test_mismatched_blocks(feats):
    train, test = feats
    with pytest.raises(InputError, match="blocks"):
        get_method("gradsim")(train, Features(grads=test.grads[:2]))
    with pytest.raises(InputError, match="same d"):
        get_method("exact")(train, Features(grads=[test.grads[0], test.grads[2], test.grads[1]]))
    with pytest.raises(InputError, match="gradients"):
        get_method("datainf")(Features(reps=train.reps), test)


# ---------------------------------------------------------------------------------------------- every method on CUDA

WORDS = ("cats", "dogs", "rain", "bread")  # the BM25 baseline reads sample texts
FEATURES = {"grads", "reps", "kfac", "proj", "rept", "history", "text"}  # the feature kinds full_features builds
PROJ = {"proj_dim": 8, "proj_seed": 0, "proj_kind": "rademacher"}  # small enough that blocks are really projected


def full_features(seed: int = 0):
    """(train, test) Features carrying every field any method reads: gradients with K-FAC factors of the
    training side (from random tokens, so factors and gradients agree), representations, two checkpoints of
    history (for TracIn), RepT parts, and the gradients' projection with :data:`PROJ`."""
    from engine.features.projection import Projector

    from ._kronecker_helpers import token_features

    train, test = token_features(seed)
    gen = torch.Generator().manual_seed(seed + 1)

    def complete(f):
        earlier = [torch.randn(g.shape, generator=gen) for g in f.grads]
        proj = Projector([g.shape[1] for g in f.grads], PROJ["proj_dim"], PROJ["proj_seed"], PROJ["proj_kind"])
        return Features(grads=f.grads, reps=torch.randn(f.n, 6, generator=gen), block_names=f.block_names,
                        history=((2e-3, earlier), (1e-3, f.grads)), kfac=f.kfac, proj=proj.project(f.grads),
                        rept=torch.cat([5 * torch.randn(f.n, 6, generator=gen),
                                        1e-2 * torch.randn(f.n, 6, generator=gen)], dim=1),
                        texts=tuple(f"sample {i} about {WORDS[i % len(WORDS)]}" for i in range(f.n)))

    return complete(train), complete(test)


def _params(method) -> dict:
    return {k: v for k, v in PROJ.items() if k in method.defaults}


def _moved(f: Features, device) -> Features:
    """``f`` with every tensor on ``device``, except the K-FAC factors, which stay on the CPU as the gradient
    pass returns them (the methods move what they need)."""
    from dataclasses import replace

    def to(t):
        return t.to(device)

    return replace(f, grads=[to(g) for g in f.grads], reps=to(f.reps), rept=to(f.rept),
                   history=tuple((w, [to(g) for g in gs]) for w, gs in f.history),
                   proj=replace(f.proj, blocks=[to(b) for b in f.proj.blocks]))


def test_the_full_features_serve_every_registered_method():
    """What the CUDA comparison below feeds the methods covers every method in the registry: a method that needs
    a new kind of feature must get it built there too, rather than be skipped."""
    train, test = full_features()
    assert train.kfac is not None and train.proj.blocks[0].shape[1] < train.grads[0].shape[1]
    for name, method in REGISTRY.items():
        assert method.needs <= FEATURES, name
        S = method(train, test, **_params(method))
        assert S.shape == (test.n, train.n) and np.isfinite(S).all(), name


CUDA = "cuda"  # the device compared with the CPU below


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_cuda_matches_cpu(name):
    """Every registered method on CUDA, both ways a caller gets there (features already on the GPU, or CPU
    features with ``device="cuda"``), in float64 and float32, whole and shard by shard, against the CPU."""
    method = get_method(name)
    params = _params(method)
    train, test = full_features()
    cpu = method(train, test, **params)
    assert np.abs(cpu).max() > 0
    g_train, g_test = _moved(train, CUDA), _moved(test, CUDA)
    tol = {"rtol": 1e-9, "atol": 1e-9 * np.abs(cpu).max()}
    np.testing.assert_allclose(method(g_train, g_test, **params), cpu, **tol)
    np.testing.assert_allclose(method(train, test, device=CUDA, **params), cpu, **tol)
    gpu32 = method(g_train, g_test, dtype="float32", **params)
    assert np.abs(gpu32 - cpu).max() <= 1e-3 * np.abs(cpu).max()
    parts = list(score_in_shards(name, g_train, g_test, 5, **params))
    np.testing.assert_allclose(np.concatenate([p[2] for p in parts], axis=1), cpu, **tol)
