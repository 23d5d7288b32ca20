"""Quantized bases (spec field ``model.load_in``): refused plainly, naming the field, where they cannot run (no CUDA,
a CPU run, bitsandbytes missing) before bitsandbytes is imported; on a GPU with bitsandbytes, a 4-bit tiny base is
fine-tuned and attributed end to end, and an adapter trained on it is attributed as the user's (``attribute``)."""

import importlib.util
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from engine.cli import build_parser
from engine.errors import InputError
from engine.model import base
from engine.model.base import check_quantized, load_base
from engine.model.states import load_model
from engine.spec.load import spec_from_dict


def _spec(load_in="4bit", device="auto", **extra):
    return spec_from_dict({"model": {"load_in": load_in, **extra}, "device": device})


@pytest.mark.parametrize("load_in", ["4bit", "8bit"])
def test_without_cuda_a_quantized_base_is_refused_naming_the_field(monkeypatch, load_in):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delitem(sys.modules, "bitsandbytes", raising=False)
    for load in (lambda: load_model(_spec(load_in, device="cpu")), lambda: load_model(_spec(load_in)),
                 lambda: load_base("tiny", load_in=load_in)):
        with pytest.raises(InputError, match=rf"^spec field 'model.load_in' is '{load_in}': .*CUDA only.*no CUDA"):
            load()
    assert "bitsandbytes" not in sys.modules  # refused before anything of it was imported


def test_a_cpu_run_with_a_quantized_base_is_refused_even_where_cuda_exists(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(InputError, match=r"^spec field 'model.load_in' is '8bit'.*device is 'cpu' \(spec field 'dev"):
        load_model(_spec("8bit", device="cpu"))


def test_without_bitsandbytes_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real = importlib.util.find_spec
    monkeypatch.setattr(base.importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else
                        real(name, *a))
    with pytest.raises(InputError, match=r"^spec field 'model.load_in' is '4bit': it needs the bitsandbytes package"
                                         r".*pip install bitsandbytes==\d+\.\d+\.\d+"):
        check_quantized("4bit", torch.device("cuda", 0))


def test_the_default_base_is_not_quantized_and_attribute_offers_the_choice():
    assert _spec("none").model.load_in == "none" and spec_from_dict({}).model.load_in == "none"
    model, _ = load_base("tiny")  # unchanged: float32 on the CPU
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    args = build_parser().parse_args(["attribute", "--model", "tiny", "--adapter", "a", "--dataset", "d.jsonl",
                                      "--load-in", "4bit"])
    assert args.load_in == "4bit"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["attribute", "--model", "tiny", "--adapter", "a", "--dataset", "d",
                                   "--load-in", "2bit"])


needs_bnb = pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None,
                               reason="a quantized base needs CUDA and bitsandbytes")


@needs_bnb
@pytest.mark.slow
def test_a_4bit_tiny_base_is_fine_tuned_and_attributed_end_to_end(tmp_path):
    from engine.pipeline.run import run_pipeline

    common = {"task": {"name": "grammars", "n_train_per_label": 2, "n_test_per_label": 1},
              "train": {"epochs": 2, "batch_size": 8, "lr": 1e-3, "max_length": 48},
              "scoring": {"methods": ["gradsim", "datainf", "ekfac"], "checkpoints": "all"}, "device": "cuda"}
    lm = load_model(spec_from_dict({**common, "model": {"load_in": "4bit"}}))
    lora = {n: p for n, p in lm.model.named_parameters() if ".lora_" in n}
    assert lora and {p.dtype for p in lora.values()} == {torch.float32}
    assert all(p.device.type == "cuda" for p in lora.values())
    assert any("4bit" in type(m).__name__ for m in lm.model.modules())

    run = run_pipeline(spec_from_dict({**common, "name": "q4", "model": {"load_in": "4bit"}}), tmp_path)
    scores = pq.read_table(run / "scores").to_pandas()
    assert set(scores.method) == {"gradsim", "datainf", "ekfac"} and np.isfinite(scores.score).all()
    assert (scores.score != 0).any()
    # the adapter trained on the 4-bit base, attributed as the user's (what `attribute` runs)
    adapter = run / "checkpoints" / "epoch-2"
    mine = spec_from_dict({**common, "name": "q4-adapter", "scoring": {**common["scoring"], "checkpoints": "last"},
                           "model": {"load_in": "4bit", "adapter": str(adapter)}})
    again = pq.read_table(run_pipeline(mine, tmp_path) / "scores").to_pandas()
    assert set(again.method) == {"gradsim", "datainf", "ekfac"} and np.isfinite(again.score).all()
