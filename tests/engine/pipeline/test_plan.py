"""The memory plan (``engine plan``): shapes read on the meta device equal the loaded model's, the predicted peaks
are within 25 % of what a real run's probe measures, disk within 25 % of the files written, and the proposals fit."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from engine.errors import InputError
from engine.pipeline.plan import model_shape, plan_run
from engine.spec.load import spec_from_dict

REPO = Path(__file__).resolve().parents[3]
SPEC = {"name": "plan-tiny", "model": {"name": "tiny"},
        "task": {"name": "grammars", "seed": 0, "n_train_per_label": 4, "n_test_per_label": 1},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"epochs": 2, "batch_size": 8, "lr": 0.01, "max_length": 48},
        "scoring": {"methods": ["gradsim", "datainf", "exact", "ekfac", "gradsim_proj", "bm25"], "shard_size": 16,
                    "feature_cache": "keep", "self_influence": False},
        "analysis": {"stages": []}}

# a Llama-2-7B-shaped configuration (its published config.json values), for a plan of a model that is not here
LLAMA2_7B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
             "intermediate_size": 11008, "num_attention_heads": 32, "num_hidden_layers": 32,
             "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
             "tie_word_embeddings": False, "torch_dtype": "float16"}


def test_meta_shapes_equal_the_loaded_model():
    from engine.features.grads import lora_blocks
    from engine.model.states import load_model

    spec = spec_from_dict(SPEC)
    shape = model_shape(spec)
    lm = load_model(spec, torch.device("cpu"))
    real_blocks = lora_blocks(lm.model)
    assert [o * i for _, o, i in shape.blocks] == [m.out_features * m.in_features for _, m in real_blocks]
    assert shape.lora_params == sum(p.numel() for p in lm.model.parameters() if p.requires_grad)
    base = {id(p): p for n, p in lm.model.named_parameters() if not p.requires_grad}
    assert shape.base_params == sum(p.numel() for p in base.values())
    assert shape.weight_bytes == 4 * shape.base_params


def test_a_llama_2_7b_config_is_planned_without_weights(tmp_path):
    folder = tmp_path / "llama-2-7b-config"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA2_7B))
    spec = spec_from_dict({**SPEC, "model": {"name": str(folder)}, "dtype": "bfloat16",
                           "train": {**SPEC["train"], "max_length": 512}})
    plan = plan_run(spec, device="cuda", gpu_memory_gb=80)
    s = plan.model
    assert s.base_params == 6_738_415_616  # Llama-2-7B's parameter count
    assert s.weight_bytes == 2 * s.base_params  # bfloat16
    assert s.lora_params == 32 * 2 * 2 * 4 * 4096  # q/v, A and B, r=4
    assert plan.lengths_from == "max_length" and plan.tokens == 512  # no tokenizer beside the config
    # per token and layer 9h + 3kv + 5I bfloat16 values (x 1.15): 2.36 MB per token for the whole model
    assert s.act_bytes_per_token == int(32 * (9 * 4096 + 3 * 4096 + 5 * 11008) * 2 * 1.15)
    features = plan.stage("features")
    assert features.gpu_parts["weights"] == pytest.approx(2 * s.base_params / 2**20)
    # 16 samples of 512 tokens: 60 GB of activations beside the weights and the K-FAC sums (float64 [4096, 4096]
    # per lora_B block) do not fit 80 GB; the proposed batch does
    assert plan.grad_batch == 16 and plan.peak_gpu_mb > 80 * 1024
    b = plan.proposals["grad_batch_size"]
    assert 1 <= b < 16
    fitted = plan_run(spec_from_dict({**spec.to_dict(), "scoring": {**spec.to_dict()["scoring"],
                                                                     "grad_batch_size": b}}),
                      device="cuda", gpu_memory_gb=80)
    assert fitted.peak_gpu_mb <= 0.9 * 80 * 1024


def _with_batch(b: int):
    return spec_from_dict({**SPEC, "scoring": {**SPEC["scoring"], "grad_batch_size": b}})


def test_proposed_batches_fit_the_budget_and_one_more_sample_does_not():
    at4, at5 = (plan_run(_with_batch(b), memory_gb=16).stage("features").host_mb for b in (4, 5))
    per_sample = at5 - at4
    assert per_sample > 0
    budget_gb = (at4 + 6.5 * per_sample) / 0.9 / 1024  # room for 10 samples in 90 % of it
    b = plan_run(_with_batch(4), memory_gb=budget_gb).proposals["grad_batch_size"]
    assert b == 10
    limit = 0.9 * budget_gb * 1024
    assert plan_run(_with_batch(b), memory_gb=budget_gb).stage("features").host_mb <= limit
    assert plan_run(_with_batch(b + 1), memory_gb=budget_gb).stage("features").host_mb > limit


def test_cuda_without_a_gpu_needs_its_memory():
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: its memory is read")
    with pytest.raises(InputError, match="--gpu-memory-gb"):
        plan_run(spec_from_dict(SPEC), device="cuda")


def _run(spec_path: Path, *args, cwd: Path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_prediction_within_a_quarter_of_a_real_run(tmp_path):
    """The tiny run in its own process (as a user runs it): each measured stage's peak, the run's peak and the
    feature cache on disk within 25 % of the plan."""
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    planned = _run(spec_path, "plan", str(spec_path), "--json", cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    ran = _run(spec_path, "run", str(spec_path), "--store", str(tmp_path / "s.duckdb"), "--quiet", "--no-ingest",
               cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    manifest = json.loads((tmp_path / "runs" / SPEC["name"] / "manifest.json").read_text())
    measured = manifest["peak_memory_mb"]
    compared = [s for s in plan["stages"] if s in measured["rss"] and s != "load"]
    assert {"finetune", "features", "score_ekfac", "metrics"} <= set(compared)
    for s in compared:
        assert plan["stages"][s]["host_mb"] == pytest.approx(measured["rss"][s], rel=0.25), s
    assert plan["peak_mb"] == pytest.approx(measured["peak_rss"], rel=0.25)
    cache = next((tmp_path / "features").iterdir())  # features/ beside the runs folder; one key
    on_disk = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2**20
    assert plan["disk_mb"]["feature cache"] == pytest.approx(on_disk, rel=0.25)


def test_the_command_prints_the_plan_and_refuses_bad_input_without_a_traceback(tmp_path):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    ok = _run(spec_path, "plan", str(spec_path), "--memory-gb", "16", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "features" in ok.stdout and "proposed:" in ok.stdout and "the run fits" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SPEC, "model": {"name": str(tmp_path / "no-such-model")}}))
    r = _run(bad, "plan", str(bad), cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr
