"""The stability check on the tiny model equals, per perturbation, a direct re-scoring with the perturbed setting
computed here: features from ``sample_features`` on the run's adapter state (loaded from its run folder), scores
from the method itself, and the figures from the formula — top-k sets by a Python sort, Spearman by scipy."""

import contextlib
import dataclasses

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from scipy import stats

from engine.catalog.analyses import STABILITY_PERTURBATIONS
from engine.data.encoding import encode
from engine.features.grads import sample_features
from engine.features.types import Features
from engine.model.finetune import set_lora_state
from engine.model.states import checkpoint_state, load_model
from engine.pipeline.run import run_pipeline
from engine.pipeline.tokens import _run_task
from engine.scoring.methods import get_method
from engine.spec.load import spec_from_dict

METHODS = ["gradsim", "datainf", "gradsim_proj", "repsim", "tracin", "bm25"]


@pytest.fixture(scope="module")
def run(tiny_spec, tmp_path_factory):
    spec = spec_from_dict({**tiny_spec, "name": "tiny-stability", "analysis": {"stages": ["stability"]},
                           "scoring": {**tiny_spec["scoring"], "methods": METHODS, "query_index": False}})
    folder = run_pipeline(spec, tmp_path_factory.mktemp("stability-runs"), progress=False)
    table = pq.read_table(folder / "stability.parquet").to_pandas().set_index(["method", "perturbation"])
    return spec, folder, table


def top_k(row, k):
    return set(sorted(range(len(row)), key=lambda i: (-row[i], i))[:k])


def figures(A, B, k):
    """(mean top-k overlap, mean Spearman) of two [m, n] score matrices, from the definitions."""
    overlap = np.mean([len(top_k(a, k) & top_k(b, k)) / k for a, b in zip(A, B)])
    rhos = [stats.spearmanr(a, b).statistic for a, b in zip(A, B)]
    return overlap, np.nanmean(rhos)


def stored(folder, method, checkpoint, n_test, n_train):
    t = pq.read_table(folder / "scores", filters=[("method", "=", method),
                                                  ("checkpoint", "=", checkpoint)]).to_pandas()
    S = np.full((n_test, n_train), np.nan)
    S[t.test_id, t.train_id] = t.score
    return S


@pytest.fixture(scope="module")
def direct(run):
    """``scores(method, params, loss_on=None, context=nullcontext)`` -> [n_test, n_train]: a gradient pass over every
    sample at checkpoint 2 with that setting, then the method's own scoring."""
    spec, folder, _ = run
    task = _run_task(folder, "t")
    lm = load_model(spec)
    set_lora_state(lm.model, checkpoint_state(folder, 2))
    lm.model.eval()
    t = spec.train

    def side(samples, loss_on, kfac):
        enc = [encode(s, lm.tok, t.template, t.max_length, loss_on, t.preprocessing) for s in samples]
        f = sample_features(lm.model, enc, lm.tok.pad_token_id, lm.device, spec.scoring.grad_batch_size,
                            progress=False, kfac=kfac)
        return Features(grads=[g.float() for g in f.grads], reps=f.reps.float(), block_names=f.block_names,
                        kfac=f.kfac)

    def scores(method, params, loss_on=None, context=contextlib.nullcontext):
        with context():
            train, test = side(task.train, loss_on or t.loss_on, False), side(task.test, loss_on or t.loss_on, False)
        return np.asarray(get_method(method).score(train, test, params), dtype=np.float64)

    return lm, task, scores


def check(table, method, perturbation, A, B, k):
    overlap, rho = figures(A, B, k)
    r = table.loc[(method, perturbation)]
    assert r.overlap == pytest.approx(overlap, abs=1e-12), (method, perturbation)
    assert r.spearman == pytest.approx(rho, abs=1e-6), (method, perturbation)
    assert r.should_matter == STABILITY_PERTURBATIONS[perturbation][1]


def test_which_rows_exist(run):
    _, _, table = run
    perts = {m: set(table.loc[m].index) for m in table.index.get_level_values(0).unique()}
    assert "bm25" not in perts  # a baseline without a model: nothing of it can move
    assert perts["tracin"] == {"checkpoint"}  # a subset pass is taken at one checkpoint, TracIn sums them all
    passes = {"checkpoint", "precision", "attention", "loss_positions"}
    assert perts["gradsim"] == perts["repsim"] == passes
    assert perts["datainf"] == passes | {"damping_x0.1", "damping_x10"}
    assert perts["gradsim_proj"] == passes | {"proj_seed"}
    assert table.overlap.between(0, 1).all()


def test_checkpoint_and_damping_equal_a_direct_rescoring(run, direct):
    spec, folder, table = run
    _, task, scores = direct
    n_test, n_train, k = len(task.test), len(task.train), int(table.k.iloc[0])
    for m in ("gradsim", "datainf", "repsim", "tracin"):
        check(table, m, "checkpoint", stored(folder, m, 2, n_test, n_train), stored(folder, m, 1, n_test, n_train), k)
    p = spec.scoring.method_params("datainf")
    for name, factor in (("damping_x0.1", 0.1), ("damping_x10", 10.0)):
        alt = scores("datainf", dataclasses.replace(p, lambda_c=p.lambda_c / factor))
        check(table, "datainf", name, stored(folder, "datainf", 2, n_test, n_train), alt, k)


def test_new_passes_equal_a_direct_rescoring(run, direct):
    spec, _, table = run
    lm, _, scores = direct
    k = int(table.k.iloc[0])
    base = lm.model.get_base_model()
    kernel = base.config._attn_implementation
    other = "eager" if kernel != "eager" else "sdpa"

    @contextlib.contextmanager
    def attention():
        base.set_attn_implementation(other)
        try:
            yield
        finally:
            base.set_attn_implementation(kernel)

    flipped = "sequence" if spec.train.loss_on == "response" else "response"
    for m in ("gradsim", "datainf", "repsim"):
        p = spec.scoring.method_params(m)
        ref = scores(m, p)
        check(table, m, "precision", ref, scores(m, p, context=lambda: torch.autocast("cpu", dtype=torch.bfloat16)), k)
        check(table, m, "attention", ref, scores(m, p, context=attention), k)
        check(table, m, "loss_positions", ref, scores(m, p, loss_on=flipped), k)
    p = spec.scoring.method_params("gradsim_proj")
    check(table, "gradsim_proj", "proj_seed", scores("gradsim_proj", p),
          scores("gradsim_proj", dataclasses.replace(p, proj_seed=p.proj_seed + 1)), k)


def test_a_methods_stability_is_its_mean_overlap_over_what_should_not_matter(run):
    _, folder, table = run
    summary = pq.read_table(folder / "stability_methods.parquet").to_pandas().set_index("method")
    for method, rows in table.reset_index().groupby("method"):
        calm = rows[~rows.should_matter]
        assert summary.loc[method, "stability"] == pytest.approx(calm.overlap.mean())
        assert summary.loc[method, "worst_overlap"] == pytest.approx(calm.overlap.min())
        assert 0 <= summary.loc[method, "stability"] <= 1
