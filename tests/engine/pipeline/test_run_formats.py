"""The pipeline with the paper's preprocessing and with a tokenizer's own chat template, end to end on the tiny model;
per-sample gradients of left-padded samples (pads carry loss) against the one-sample-at-a-time loop."""

import numpy as np
import pyarrow.parquet as pq
import torch

from engine.pipeline.run import run_pipeline
from engine.spec.load import spec_from_dict

BASE = {"task": {"name": "grammars", "seed": 0, "n_train_per_label": 2, "n_test_per_label": 1},
        "model": {"name": "tiny"}, "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
        "scoring": {"methods": ["gradsim", "datainf", "ekfac", "repsim", "rept"], "checkpoints": "last"}}


def test_a_spec_with_paper_preprocessing_runs(tmp_path):
    spec = spec_from_dict({**BASE, "name": "paper-format",
                           "train": {"epochs": 1, "batch_size": 8, "lr": 0.01, "max_length": 160, "loss_on": "sequence",
                                     "preprocessing": "paper", "max_grad_norm": 1.0}})
    run = run_pipeline(spec, tmp_path, progress=False)
    scores = pq.read_table(run / "scores").to_pandas()
    assert np.isfinite(scores.score).all() and set(scores.method) == set(BASE["scoring"]["methods"])
    assert np.isfinite(pq.read_table(run / "train_loss.parquet").to_pandas().loss).all()


def test_per_sample_gradients_of_left_padded_samples_equal_the_loop():
    from _references import loop_gradients

    from engine.data.encoding import encode
    from engine.data.tasks import build_task
    from engine.features.grads import sample_features
    from engine.model.base import load_base
    from engine.model.finetune import add_lora
    from engine.spec.run_spec import LoraSpec

    model, tok = load_base("tiny")
    model = add_lora(model, LoraSpec(r=4, alpha=8, dropout=0.0), seed=0)
    with torch.no_grad():  # a non-zero B, so that every block has a gradient
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    model.eval()
    task = build_task("grammars", seed=0, n_train_per_label=1, n_test_per_label=1)
    encs = [encode(s, tok, "[INST] {prompt} [/INST] {response}", 160, "sequence", "paper") for s in task.train[:5]]
    assert all(e.n_pad > 0 for e in encs)
    cpu = torch.device("cpu")
    got = sample_features(model, encs, tok.pad_token_id, cpu, batch_size=3, progress=False, kfac=True)
    _, want = loop_gradients(model, encs, cpu)  # one sample at a time, the loss written out per position
    for g, w in zip(got.grads, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6 * float(w.abs().max()))
    assert got.kfac.tokens == 5 * 160  # every position of a sample carries loss, its own pads included


def test_a_spec_with_the_tokenizers_chat_template_runs(tmp_path, chat_tokenizer):
    """A local model folder whose tokenizer has a chat template (built offline: the tiny Llama + ChatML)."""
    from engine.model.base import build_tiny_model

    tok = chat_tokenizer
    folder = tmp_path / "chat-model"
    build_tiny_model(len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    spec = spec_from_dict({**BASE, "name": "chat-format", "model": {"name": str(folder)},
                           "train": {"epochs": 1, "batch_size": 8, "lr": 0.01, "max_length": 160,
                                     "template": "chat"}})
    run = run_pipeline(spec, tmp_path / "runs", progress=False)
    scores = pq.read_table(run / "scores").to_pandas()
    assert np.isfinite(scores.score).all() and set(scores.method) == set(BASE["scoring"]["methods"])
