"""Shared fixtures: the tiny model/tokenizer and small task data (built in memory, nothing downloaded)."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from engine.models import build_tiny_tokenizer

    return build_tiny_tokenizer()


TINY_SPEC = {
    "name": "tiny-grammars",
    "task": {"name": "grammars", "seed": 0, "n_train_per_label": 3, "n_test_per_label": 1},
    "model": {"name": "tiny"},
    "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
    "train": {"epochs": 2, "batch_size": 8, "lr": 0.01, "max_length": 48},
    "scoring": {"checkpoints": "all", "shard_size": 16},
}


@pytest.fixture(scope="session")
def tiny_spec():
    """The spec (as a dict) of the small tiny-model run used across test packages."""
    return dict(TINY_SPEC)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A complete run folder of the tiny pipeline (all methods, 2 checkpoints, 30 train, 10 test)."""
    from engine.pipeline import run_pipeline
    from engine.spec import spec_from_dict

    runs = tmp_path_factory.mktemp("runs")
    return run_pipeline(spec_from_dict(TINY_SPEC), runs, progress=False)


@pytest.fixture(scope="session")
def tiny_store(tiny_run, tmp_path_factory):
    """A DuckDB store file holding ``tiny_run``; returns its path."""
    import store

    path = tmp_path_factory.mktemp("store") / "influence.duckdb"
    with store.Store(path) as s:
        s.ingest_run(tiny_run)
    return path


ANALYSIS_STAGES = {"stages": ["ihvp", "convergence", "retrain"], "retrain_single": 1, "retrain_labels": 1,
                   "retrain_seeds": 2, "noise_seeds": 2, "lds_subsets": 4, "cf_prompts": 1, "generate_tokens": 4,
                   "ihvp_iterations": [1, 10, 100]}


@pytest.fixture(scope="session")
def tiny_analysis_run(tmp_path_factory):
    """The tiny run with the three analysis stages (at most 13 retrainings: 2 noise, 1 single, 1 label, 2 random,
    up to 3 top-k, 4 LDS subsets) and three methods."""
    from engine.pipeline import run_pipeline
    from engine.spec import spec_from_dict

    spec = {**TINY_SPEC, "name": "tiny-analyses", "analysis": ANALYSIS_STAGES,
            "scoring": {**TINY_SPEC["scoring"], "methods": ["gradsim", "datainf", "tracin"]}}
    return run_pipeline(spec_from_dict(spec), tmp_path_factory.mktemp("analysis-runs"), progress=False)
