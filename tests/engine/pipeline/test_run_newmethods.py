"""The projected-gradient and RepT methods through the whole pipeline on the tiny model."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from engine.features.projection import project_grads
from engine.features.types import Features
from engine.pipeline.run import run_pipeline
from engine.runfolder.runformat import read_manifest
from engine.scoring.methods import get_method
from engine.spec.load import spec_from_dict

NEW = ["gradsim_proj", "gradcos_proj", "datainf_proj", "rept"]


def _spec(tiny_spec, methods, **scoring):
    d = dict(tiny_spec, name=f"new-{'-'.join(methods)}"[:60])
    d["scoring"] = {**tiny_spec["scoring"], "checkpoints": "last", "methods": methods, "proj_dim": 16, **scoring}
    return spec_from_dict(d)


def _scores(folder, method):
    t = pq.read_table(folder / "scores", filters=[("method", "=", method)]).to_pandas()
    S = np.full((t.test_id.max() + 1, t.train_id.max() + 1), np.nan)
    S[t.test_id, t.train_id] = t.score
    return S


@pytest.fixture(scope="module")
def runs(tiny_spec, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    only_new = run_pipeline(_spec(tiny_spec, NEW, proj_seed=3), out, progress=False)
    with_full = run_pipeline(_spec(tiny_spec, ["gradsim", "gradsim_proj", "datainf_proj"], proj_seed=3), out,
                             progress=False)
    return only_new, with_full


def test_new_methods_run_end_to_end(runs):
    only_new, with_full = runs
    m = read_manifest(only_new)
    assert m["status"] == "complete" and m["methods"] == NEW
    mt = pq.read_table(only_new / "metrics.parquet").to_pandas()
    assert sorted(mt.method) == sorted(NEW) and mt.acc.between(0, 1).all()
    for name in NEW:
        S = _scores(only_new, name)
        assert S.shape == (10, 30) and np.isfinite(S).all()
    assert np.all(np.abs(_scores(only_new, "rept")) <= 1 + 1e-6)


def test_dropping_full_gradients_changes_nothing(runs):
    """Projected scores are the same whether the pipeline kept the full gradients (gradsim asked) or not."""
    only_new, with_full = runs
    for name in ("gradsim_proj", "datainf_proj"):
        np.testing.assert_allclose(_scores(only_new, name), _scores(with_full, name), rtol=1e-5,
                                   atol=1e-6 * np.abs(_scores(with_full, name)).max())
    # and projecting the full gradients behind with_full's gradsim (k=16 per block) stays close to it
    S, S_k = _scores(with_full, "gradsim"), _scores(with_full, "gradsim_proj")
    rho = np.mean([np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1] for a, b in zip(S, S_k)])
    assert rho > 0.5


def test_projected_features_keep_the_block_structure():
    g = [torch.randn(5, 40), torch.randn(5, 8)]
    p = project_grads(g, 16, seed=1)
    f = Features(proj=p)
    assert f.n == 5 and [b.shape[1] for b in p.blocks] == [16, 8]
    assert get_method("gradsim_proj")(f, Features(proj=p), proj_dim=16, proj_seed=1).shape == (5, 5)
