import numpy as np
import pytest
import torch

from engine.errors import InputError
from engine.methods import REGISTRY, Features, get_method, score_in_shards

BUILTIN = {"gradsim", "gradcos", "tracin", "datainf", "exact", "lissa", "lissa_paper", "repsim"}


def test_registry_contents():
    assert BUILTIN <= set(REGISTRY)
    for name in BUILTIN:
        m = REGISTRY[name]
        assert m.name == name and m.description and m.fn.__doc__
        assert m.prepare is not None and m.train_blocks is not None
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_cuda_matches_cpu(feats, name):
    train, test = feats

    def to(f):
        return Features(grads=[g.cuda() for g in f.grads], reps=f.reps.cuda(), block_names=f.block_names)

    cpu = get_method(name)(train, test)
    gpu = get_method(name)(to(train), to(test))
    np.testing.assert_allclose(gpu, cpu, rtol=1e-9, atol=1e-9 * np.abs(cpu).max())
    gpu32 = get_method(name)(to(train), to(test), dtype="float32")
    assert np.abs(gpu32 - cpu).max() <= 1e-3 * np.abs(cpu).max()
    parts = list(score_in_shards(name, to(train), to(test), 5))
    np.testing.assert_allclose(np.concatenate([p[2] for p in parts], axis=1), cpu, rtol=1e-9, atol=1e-9)
