"""The run frees a method's kept statistics once no method still to come keeps them, and only when no later stage
reads them (engine.pipeline.stages.releases_early); the scores are those of a run that keeps everything."""

import numpy as np
import torch

from engine.features.grads import KroneckerFactors
from engine.features.stage import CheckpointData, SideFeatures
from engine.features.types import Features, TrainData
from engine.pipeline.run import score_checkpoint
from engine.pipeline.stages import releases_early
from engine.scoring.methods import get_method
from engine.scoring.methods._kronecker import _EIGEN
from engine.scoring.methods.base import ScoringMethod
from engine.spec.load import spec_from_dict

SHAPES = [(3, 4), (2, 3)]  # (out, in) of two LoRA blocks


def _checkpoint(seed: int = 0, n: int = 14, m: int = 3) -> CheckpointData:
    gen = torch.Generator().manual_seed(seed)
    grads = [torch.randn(n, o * i, generator=gen) for o, i in SHAPES]
    test = [torch.randn(m, o * i, generator=gen) for o, i in SHAPES]
    psd = lambda k: (lambda a: a @ a.T + torch.eye(k, dtype=torch.float64))(  # noqa: E731
        torch.randn(k, k, generator=gen, dtype=torch.float64))
    kfac = KroneckerFactors([psd(i) for _, i in SHAPES], [psd(o) for o, _ in SHAPES], tokens=3 * n, samples=n)
    names = ("b0.lora_A", "b0.lora_B")
    train = TrainData.of(Features(grads=grads, reps=torch.randn(n, 5, generator=gen), block_names=names,
                                  kfac=kfac), shard_size=5)
    side = SideFeatures(grads=test, reps=torch.randn(m, 5, generator=gen), loss=torch.zeros(m), block_names=names)
    return CheckpointData(checkpoint=1, weight=1.0, train=train, test=side)


class _Writer:
    def __init__(self):
        self.tables = {}

    def write_table(self, name, table):
        self.tables[name] = table


def _families(train: TrainData) -> set[str]:
    return ({"gram"} if any(k[0] == "gram" for k in train.memo if isinstance(k, tuple)) else set()) | (
        {"kronecker"} if train.kfac in _EIGEN else set())


def _score(release_early: bool, monkeypatch):
    """Score exact, lissa, ekfac, gradsim in that order; record the families kept as each method starts."""
    import engine.pipeline.run as run

    now, seen, real = _checkpoint(), [], run.score_in_shards
    monkeypatch.setattr(run, "score_in_shards",
                        lambda name, train, *a, **k: seen.append((name, _families(now.train))) or real(name, train, *a,
                                                                                                            **k))
    methods = [ScoringMethod(x, get_method(x).make_params()) for x in ("exact", "lissa", "ekfac", "gradsim")]
    writer = _Writer()
    score_checkpoint(writer, methods, now, [], 5, {}, release_early=release_early)
    return seen, _families(now.train), writer.tables


def test_statistics_are_freed_before_the_first_method_that_no_later_one_needs(monkeypatch):
    seen, after, tables = _score(True, monkeypatch)
    # lissa reuses exact's Gram factors; ekfac starts without them; gradsim without the eigenbases either
    assert seen == [("exact", set()), ("lissa", {"gram"}), ("ekfac", set()), ("gradsim", set())]
    assert after == set()  # the last method's freed too
    kept_seen, kept_after, kept_tables = _score(False, monkeypatch)
    assert kept_seen == [("exact", set()), ("lissa", {"gram"}), ("ekfac", {"gram"}), ("gradsim", {"gram", "kronecker"})]
    assert kept_after == {"gram", "kronecker"}
    assert tables.keys() == kept_tables.keys()
    for name in tables:  # recomputing instead of keeping changes no score
        np.testing.assert_array_equal(np.asarray(tables[name]["score"]), np.asarray(kept_tables[name]["score"]))


def test_statistics_are_kept_when_a_later_stage_reads_them():
    spec = {"model": {"name": "tiny"}, "task": {"name": "grammars"}}
    assert not releases_early(spec_from_dict(spec))  # self-influence (on by default) re-reads them
    assert releases_early(spec_from_dict({**spec, "scoring": {"self_influence": False}}))
    assert not releases_early(spec_from_dict({**spec, "scoring": {"self_influence": False, "query_index": True}}))
