"""The pipeline end to end on the tiny model: a complete, consistent run folder, or nothing at all."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from engine.errors import InputError
from engine.evaluation import metrics
from engine.pipeline.run import run_pipeline
from engine.runfolder.runformat import list_complete_runs, read_manifest
from engine.spec.load import spec_from_dict


def _scores(folder, method, ckpt):
    t = pq.read_table(folder / "scores", filters=[("method", "=", method), ("checkpoint", "=", ckpt)]).to_pandas()
    n_test, n_train = t.test_id.max() + 1, t.train_id.max() + 1
    S = np.full((n_test, n_train), np.nan)
    S[t.test_id, t.train_id] = t.score
    return S


def test_run_folder_is_complete_and_consistent(tiny_run, tiny_spec):
    m = read_manifest(tiny_run)
    assert m is not None and m["kind"] == "pipeline" and m["status"] == "complete"
    assert (m["n_train"], m["n_test"]) == (30, 10) and m["checkpoints"] == [1, 2]
    assert set(m["methods"]) == set(spec_from_dict(tiny_spec).scoring.methods)
    assert m["k_default"] == 3  # floor(30 train / 10 labels)
    samples = pq.read_table(tiny_run / "samples.parquet").to_pandas()
    assert (samples.split == "train").sum() == 30 and (samples.split == "test").sum() == 10
    scores = pq.read_table(tiny_run / "scores")
    assert scores.num_rows == len(m["methods"]) * 2 * 30 * 10
    # shard_size 16 scores 30 training samples in 2 shards per method and checkpoint; the commit merged them
    # into one file sorted by test prompt (engine.runfolder.score_layout)
    assert [p.name for p in (tiny_run / "scores").glob("datainf-ckpt2*.parquet")] == ["datainf-ckpt2.parquet"]
    one = pq.read_table(tiny_run / "scores" / "datainf-ckpt2.parquet").to_pandas()
    assert list(zip(one.test_id, one.train_id)) == [(j, i) for j in range(10) for i in range(30)]
    for e in range(3):
        assert (tiny_run / f"checkpoints/epoch-{e}/adapter_model.safetensors").is_file()
    loss = pq.read_table(tiny_run / "train_loss.parquet").to_pandas()
    assert list(loss.epoch.unique()) == [1, 2] and np.isfinite(loss.loss).all()


def test_metrics_match_scores(tiny_run):
    samples = pq.read_table(tiny_run / "samples.parquet").to_pandas()
    tr = samples[samples.split == "train"].sort_values("sample_id").label.tolist()
    te = samples[samples.split == "test"].sort_values("sample_id").label.tolist()
    mt = pq.read_table(tiny_run / "metrics.parquet").to_pandas()
    for row in mt.itertuples():
        S = _scores(tiny_run, row.method, row.checkpoint)
        assert not np.isnan(S).any()
        assert row.acc == pytest.approx(metrics.acc_at_1(S, tr, te))
        assert row.coverage == pytest.approx(metrics.coverage_at_k(S, tr, te, row.k))
    ag = pq.read_table(tiny_run / "agreement.parquet").to_pandas()
    n = len(mt.method.unique())
    assert len(ag) == 2 * n * (n - 1) // 2
    # per test prompt, the Spearman and top-k overlap of each pair of rows; the agreement rows are their means
    per = pq.read_table(tiny_run / "test_agreement.parquet").to_pandas()
    assert len(per) == len(ag) * len(te)
    for r in ag.itertuples():
        rows = per[(per.checkpoint == r.checkpoint) & (per.method_a == r.method_a) & (per.method_b == r.method_b)]
        A, B = _scores(tiny_run, r.method_a, r.checkpoint), _scores(tiny_run, r.method_b, r.checkpoint)
        assert rows.test_id.tolist() == list(range(len(te)))
        np.testing.assert_allclose(rows.spearman, [metrics.spearman(a, b) for a, b in zip(A, B)], rtol=1e-12)
        assert rows.spearman.mean() == pytest.approx(r.spearman) and rows.overlap.mean() == pytest.approx(r.overlap)


def test_scores_equal_a_direct_method_call(tiny_run, tiny_spec):
    """Recompute features from the saved last checkpoint and compare one method's matrix."""
    import torch
    from safetensors.torch import load_file

    from engine.data.encoding import encode
    from engine.features.grads import sample_features
    from engine.features.types import Features
    from engine.model.base import load_base
    from engine.model.finetune import add_lora, set_lora_state
    from engine.pipeline.stages import load_task
    from engine.scoring.methods import get_method

    spec = spec_from_dict(tiny_spec)
    model, tok = load_base("tiny")
    model = add_lora(model, spec.lora, seed=spec.train.seed)
    set_lora_state(model, load_file(str(tiny_run / "checkpoints/epoch-2/adapter_model.safetensors")))
    model.eval()
    task = load_task(spec.task)

    def enc(ss):
        return [encode(s, tok, spec.train.template, spec.train.max_length, spec.train.loss_on) for s in ss]

    cpu = torch.device("cpu")
    tr = sample_features(model, enc(task.train), tok.pad_token_id, cpu, progress=False)
    te = sample_features(model, enc(task.test), tok.pad_token_id, cpu, progress=False)
    for name in ("datainf", "repsim"):
        want = get_method(name)(Features(tr.grads, tr.reps), Features(te.grads, te.reps))
        got = _scores(tiny_run, name, 2)
        np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-4, atol=1e-6 * np.abs(want).max())


def test_failure_mid_run_leaves_nothing(tmp_path, monkeypatch, tiny_spec):
    import engine.pipeline.run as pipeline

    def boom(*a, **k):
        raise RuntimeError("killed during scoring")

    monkeypatch.setattr(pipeline, "score_in_shards", boom)
    with pytest.raises(RuntimeError, match="killed"):
        run_pipeline(spec_from_dict(tiny_spec), tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []
    assert list_complete_runs(tmp_path) == []


def test_labels_only_in_test_write_nothing(tmp_path, tiny_spec):
    data = tmp_path / "d.jsonl"
    rows = [{"prompt": f"p{i}", "response": "r", "label": "a" if i % 2 else "b", "split": "train"} for i in range(6)]
    rows += [{"prompt": "q", "response": "r", "label": "zzz", "split": "test"}]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    runs = tmp_path / "runs"
    spec = spec_from_dict({**tiny_spec, "task": {"name": "file", "path": str(data)}})
    with pytest.raises(InputError, match="zzz"):
        run_pipeline(spec, runs, progress=False)
    assert not runs.exists() or list(runs.iterdir()) == []


def test_tracin_is_the_lr_weighted_sum_of_gradsim_over_checkpoints(tiny_run):
    """TracIn at epoch 2 = eta_1 GradSim@1 + eta_2 GradSim@2, eta_e = mean learning rate of epoch e.

    The tiny spec: 30 samples, batch 8 -> 4 steps per epoch, 8 in all, lr 0.01 decaying linearly to 0, so the
    step learning rates are 0.01 * (1 - s/8) for s = 0..7.
    """
    lrs = [0.01 * (1 - s / 8) for s in range(8)]
    eta1, eta2 = sum(lrs[:4]) / 4, sum(lrs[4:]) / 4
    want = eta1 * _scores(tiny_run, "gradsim", 1) + eta2 * _scores(tiny_run, "gradsim", 2)
    np.testing.assert_allclose(_scores(tiny_run, "tracin", 2), want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
    np.testing.assert_allclose(_scores(tiny_run, "tracin", 1), eta1 * _scores(tiny_run, "gradsim", 1), rtol=1e-4,
                               atol=1e-6 * np.abs(want).max())
