"""The retrain bank: keys change with every ingredient, entries round-trip, writes are atomic and race-safe."""

import json
import threading

import pytest
import torch

from engine.analysis.bank import RetrainBank, bank_root, base_digest, encoded_digest, eval_key, state_digest
from engine.data.encoding import Encoded
from engine.paths import BANK_ENV

IDENTITY = {"base": "b", "adapter": {"initial": "i", "r": 4}, "data": "d", "recipe": {"epochs": 2}}


def state(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"x.lora_A.weight": torch.randn(2, 3, generator=g), "x.lora_B.weight": torch.randn(3, 2, generator=g)}


def test_key_depends_on_every_ingredient():
    bank = RetrainBank(None, IDENTITY)
    k = bank.key((3, 1), 0)
    assert bank.key((1, 3), 0) == k  # the removed SET
    assert bank.key((1, 3), 1) != k and bank.key((1,), 0) != k
    for field, value in [("base", "B"), ("adapter", {"initial": "i", "r": 8}), ("data", "D"), ("recipe", {"epochs": 3})]:
        assert RetrainBank(None, {**IDENTITY, field: value}).key((3, 1), 0) != k, field


def test_digests_see_content():
    a, b = state(0), state(0)
    assert state_digest(a) == state_digest(b)
    b["x.lora_A.weight"][0, 0] += 1e-6
    assert state_digest(a) != state_digest(b)
    e1 = [Encoded((1, 2, 3), (-100, 2, 3), 1)]
    assert encoded_digest(e1, 0) != encoded_digest([Encoded((1, 2, 3), (-100, 2, 3), 2)], 0)
    assert encoded_digest(e1, 0) != encoded_digest(e1, 1)
    assert encoded_digest(e1, 0) != encoded_digest([Encoded((1, 2, 3), (1, 2, 3), 1, 1)], 0)


def test_base_digest_ignores_the_adapter_and_sees_the_base():
    from engine.model.base import load_base
    from engine.model.finetune import add_lora
    from engine.spec.run_spec import LoraSpec

    m1 = add_lora(load_base("tiny")[0], LoraSpec(), seed=0)
    m2 = add_lora(load_base("tiny")[0], LoraSpec(), seed=1)  # another adapter init, the same base
    assert base_digest(m1) == base_digest(m2)
    with torch.no_grad():
        next(p for n, p in m2.named_parameters() if "lora_" not in n).add_(1e-3)
    assert base_digest(m1) != base_digest(m2)


def test_round_trip_and_measurements(tmp_path):
    bank = RetrainBank(tmp_path, IDENTITY)
    key = bank.key((2,), 0)
    assert bank.load_state(key) is None and bank.load_eval(key, "e") is None
    bank.save_eval(key, "e", {"loss": [1.0]})  # no entry yet: nothing written
    assert bank.load_eval(key, "e") is None
    bank.save_state(key, state(), {"train_s": 2.5})
    got, meta = bank.load_state(key)
    assert all(torch.equal(got[k], v) for k, v in state().items()) and meta["train_s"] == 2.5
    assert meta["identity"]["data"] == "d" and meta["key"] == key
    bank.save_eval(key, "e", {"loss": [1.0, 2.0]})
    assert bank.load_eval(key, "e") == {"loss": [1.0, 2.0]}
    files = sorted(p.name for p in (tmp_path / key[:2] / key).iterdir())
    assert files == ["adapter.safetensors", "eval-e.json", "meta.json"]  # safetensors + JSON, no temp left
    assert not list(tmp_path.rglob(".tmp-*")) and not list(tmp_path.rglob("*.tmp"))
    json.loads((tmp_path / key[:2] / key / "meta.json").read_text())


def test_concurrent_writers_of_one_key(tmp_path):
    bank = RetrainBank(tmp_path, IDENTITY)
    key = bank.key((5,), 0)
    errors = []

    def write():
        try:
            RetrainBank(tmp_path, IDENTITY).save_state(key, state(), {"train_s": 1.0})
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=write) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert bank.load_state(key) is not None
    assert [p.name for p in (tmp_path / key[:2]).iterdir()] == [key]  # one entry, no leftover temp folders


def test_bank_root(monkeypatch, tmp_path):
    monkeypatch.delenv(BANK_ENV, raising=False)
    assert bank_root("", tmp_path / "runs") == tmp_path / "retrain-bank"
    assert bank_root("", None) is None
    assert bank_root("off", tmp_path / "runs") is None
    assert bank_root(str(tmp_path / "b"), tmp_path / "runs") == tmp_path / "b"
    monkeypatch.setenv(BANK_ENV, str(tmp_path / "env"))
    assert bank_root("", tmp_path / "runs") == tmp_path / "env"
    assert bank_root(str(tmp_path / "b"), None) == tmp_path / "b"  # the spec wins


def test_eval_key_changes_with_settings():
    assert eval_key("t", "r", {"full": True}) != eval_key("t", "r", {"full": False})
    assert eval_key("t", "r", {}) != eval_key("t2", "r", {}) != eval_key("t", "r2", {})


@pytest.mark.parametrize("root", [None])
def test_without_a_root_nothing_is_kept(root):
    bank = RetrainBank(root, IDENTITY)
    bank.save_state("k", state(), {})
    assert bank.load_state("k") is None


def test_the_bank_format_string_is_frozen():
    """FORMAT is hashed into every bank key: changing its text (even a module name inside it) orphans every
    retraining already banked. Change it only when training changes what a retraining produces."""
    from engine.analysis.bank import FORMAT

    assert FORMAT == "retrain-v1: order=permutation of the full set per (seed, epoch); dropout=engine.sample_dropout v1"
