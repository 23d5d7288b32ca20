"""The tiny pipeline gives the scores and metrics of the golden files (``golden/``), method by method.

``golden/tiny_scores_before_stages.parquet`` and ``golden/tiny_metrics_before_stages.parquet`` are the score and
metric tables that ``run_pipeline(TINY_SPEC)`` (``tests/conftest.py``) wrote at commit e431d11 (the single-function
pipeline, with the fixed per-sample data order and dropout of the ground-truth rework, which changed the fine-tuning
trajectory): the scores sorted by :data:`KEY`, the metrics' columns :data:`METRIC_COLUMNS` (one row per method and
checkpoint); every method of that default list, both epoch checkpoints. Methods added to the default list later are
not in them and are left out of the comparison.

Regenerating. These tests guard against UNINTENDED changes of what a run computes. Regenerate the files only for an
intended change of the fine-tuning or of the scoring (new training recipe, a method's formula or default
parameters, a different data order), never to make a failing test pass without knowing why, and say so in the
commit message (what changed, and that the golden files were regenerated for it)::

    .venv/bin/python scripts/regenerate_golden.py                 # the methods the files hold today
    .venv/bin/python scripts/regenerate_golden.py --all-methods   # every method the tiny run scores

It runs ``run_pipeline(TINY_SPEC)`` on the CPU and rewrites both files (it prints how far each method's scores
moved). A new method is not compared until the files are regenerated with ``--all-methods``."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

DATA = Path(__file__).parent / "golden"  # not "data/": .gitignore keeps the app's data folders out
SCORES = DATA / "tiny_scores_before_stages.parquet"
METRICS = DATA / "tiny_metrics_before_stages.parquet"
KEY = ["method", "checkpoint", "test_id", "train_id"]  # the order of the scores file
METRIC_COLUMNS = ["method", "checkpoint", "k", "acc", "coverage", "auprc", "chance_acc", "chance_coverage",
                  "best_coverage", "n_distinct_top1"]  # the columns of the metrics file


def _sorted(table):
    return table.to_pandas().sort_values(KEY).reset_index(drop=True)


def _known(df, old):
    """The rows of the methods the golden files know."""
    return df[df.method.isin(set(old.method))].reset_index(drop=True)


def test_scores_equal_the_golden_files(tiny_run):
    old = _sorted(pq.read_table(SCORES))
    new = _known(_sorted(pq.read_table(tiny_run / "scores")), old)
    assert sorted(new.method.unique()) == sorted(old.method.unique())
    assert len(new) == len(old)
    np.testing.assert_array_equal(new[KEY].to_numpy(), old[KEY].to_numpy())
    for method, group in old.groupby("method"):
        got = new.score[new.method == method].to_numpy()
        want = group.score.to_numpy()
        # float32 scores, computed in float64: identical on the machine that wrote the files. Another CPU's float32
        # kernels change the gradients' last bits, which the preconditioned methods amplify: on an AMD EPYC the
        # exact iHVP's scores move by up to 4e-6 of the largest score (small scores by up to 3e-3 relative)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max(), err_msg=method)


def test_metrics_equal_the_golden_files(tiny_run):
    cols = METRIC_COLUMNS
    old = pq.read_table(METRICS).to_pandas()[cols].sort_values(["method", "checkpoint"])
    new = _known(pq.read_table(tiny_run / "metrics.parquet").to_pandas()[cols], old).sort_values(
        ["method", "checkpoint"])
    np.testing.assert_array_equal(new[["method", "checkpoint", "k", "n_distinct_top1"]].to_numpy(),
                                  old[["method", "checkpoint", "k", "n_distinct_top1"]].to_numpy())
    np.testing.assert_allclose(new[cols[3:-1]].to_numpy(float), old[cols[3:-1]].to_numpy(float), rtol=1e-9)
