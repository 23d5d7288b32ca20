"""A training shard streamed into its cache file (``stream_train_shard``: gradients written a batch at a time,
projected per batch) is the same file as the in-memory path writes (``side_features`` + ``write_side``): every
tensor bit for bit and the same header — with gradients kept or only projections, with K-FAC and RepT."""

import json

import pytest
import torch
from safetensors import safe_open

from engine.data.encoding import encode
from engine.data.tasks import build_task
from engine.features.cache import ShardWriter, contents_of, read_header, write_side
from engine.features.plan import FeaturePlan
from engine.features.stage import PassSettings, side_features, stream_train_shard


def _encoded(tok, n):
    task = build_task("grammars", seed=0, n_train_per_label=2, n_test_per_label=1)
    return [encode(s, tok, "[INST] {prompt} [/INST] {response}", 48, "response") for s in task.train[:n]]


def _tensors(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.mark.parametrize("keep", [True, False])
def test_the_streamed_shard_equals_the_in_memory_one(lora_model, tmp_path, keep):
    model, tok = lora_model
    samples = _encoded(tok, 11)
    plan = FeaturePlan(grads=keep, reps=True, kfac=keep, projections=((8, 0, "rademacher"), (4, 3, "gaussian")),
                       rept=True)
    run = PassSettings(torch.device("cpu"), tok.pad_token_id, batch_size=3, shard_size=len(samples), progress=False)
    want, got = tmp_path / "want.safetensors", tmp_path / "got.safetensors"
    side = side_features(model, samples, run, plan, train=True, keep_grads=keep, desc="x")
    write_side(want, side, contents_of(plan, True, keep), 5, 0)
    stream_train_shard(got, model, samples, run, plan, keep, 5, 0, desc="x")
    a, b = _tensors(want), _tensors(got)
    assert set(a) == set(b)
    assert ("grads.0" in a) == keep and ("kfac.act.0" in a) == keep and "rept" in a and "reps" in a
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    assert read_header(want) == read_header(got)
    raw = got.read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    start = 8 + int.from_bytes(raw[:8], "little")
    sizes = {"F64": 8, "F32": 4}
    assert start % 8 == 0
    assert all(v["data_offsets"][0] % sizes[v["dtype"]] == 0 for k, v in header.items() if k != "__metadata__")
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file became the shard


def test_a_failed_pass_leaves_no_file(lora_model, tmp_path):
    model, tok = lora_model
    samples = _encoded(tok, 4)
    model.train()  # the pass refuses training mode, after the writer opened its temporary file
    try:
        with pytest.raises(Exception, match="eval"):
            stream_train_shard(tmp_path / "s.safetensors", model, samples,
                               PassSettings(torch.device("cpu"), tok.pad_token_id, 2, 4, False),
                               FeaturePlan(grads=True, reps=True), True, 0, 0, desc="x")
    finally:
        model.eval()
    assert list(tmp_path.iterdir()) == []


def test_rows_arrive_in_any_order_and_a_wrong_shape_is_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    w = ShardWriter(path, {"g": (torch.float32, (5, 3)), "v": (torch.float64, (2,))}, {"rows": 5})
    full = torch.arange(15, dtype=torch.float32).reshape(5, 3)
    w.write_rows("g", torch.tensor([4, 0, 1]), full[[4, 0, 1]])
    w.write_rows("g", torch.tensor([3, 2]), full[[3, 2]])
    with pytest.raises(ValueError, match="declared"):
        w.write("v", torch.zeros(3, dtype=torch.float64))
    w.write("v", torch.tensor([1.5, -2.0], dtype=torch.float64))
    w.close({"rows": 5, "note": "done"})
    t = _tensors(path)
    assert torch.equal(t["g"], full) and torch.equal(t["v"], torch.tensor([1.5, -2.0], dtype=torch.float64))
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"json": '{"rows": 5, "note": "done"}'}
