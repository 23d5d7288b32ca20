"""Spec field rules are metadata on the fields (``engine.spec.run_spec``): validation loops over them, every
rule-bearing field refuses a bad value with a message naming it, and the messages and spec hashes are those the
hand-written checks gave."""

import math
import re
import typing

import pytest

from engine.catalog.analyses import ANALYSES
from engine.catalog.fields import field_at, rules_of
from engine.catalog.methods import METHOD_NAMES
from engine.errors import InputError
from engine.spec.load import spec_from_dict
from engine.spec.presets import DEMO_TASKS, PRESETS, demo_spec
from engine.spec.run_spec import RunSpec, spec_rule

RULES = rules_of(RunSpec)


def _nested(path: str, value) -> dict:
    out: dict = {}
    node = out
    *parents, leaf = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return out


def _bad_values(path: str, r) -> list[tuple[object, str]]:
    """(bad value, the field path its error names) for every rule the field carries."""
    tp = field_at(RunSpec, path)[1]
    is_list = typing.get_origin(tp) is tuple
    kind = float if float in (tp, *typing.get_args(tp)) else int
    one = (lambda v: ([v], f"{path}[0]")) if is_list else (lambda v: (v, path))
    out = []
    if r["choices"] is not None:
        out.append(one("not-a-choice"))
    if r["nonempty"]:
        out.append(([], path))
    if r["unique"]:
        out.append(([r["choices"][0]] * 2, path))
    if r["positive"]:
        out += [one(kind(0)), one(kind(-1))]
    if r["minimum"] is not None:
        out.append(one(kind(r["minimum"]) - 1))
    if r["maximum"] is not None:
        out.append(one(kind(r["maximum"]) + 1))
    if r["below"] is not None:
        out.append(one(kind(r["below"])))
    if kind is float:
        out.append(one(math.inf))
    return out


ENFORCED = [(path, bad, named) for path, r in RULES.items() for bad, named in _bad_values(path, r)]


def test_the_rule_bearing_fields():
    """What the rules cover (a rule dropped by mistake shows here)."""
    enforced = {path for path, _, _ in ENFORCED}
    assert enforced == {
        "task.n_train_per_label", "task.n_test_per_label", "lora.r", "lora.alpha", "lora.dropout",
        "lora.target_modules", "train.epochs", "train.batch_size", "train.lr", "train.max_length", "train.loss_on",
        "train.preprocessing", "train.pad_attention", "train.max_grad_norm", "train.micro_batch_size", "scoring.methods", "scoring.checkpoints", "scoring.lambda_c",
        "scoring.grad_batch_size", "scoring.shard_size", "scoring.k", "scoring.proj_dim", "scoring.proj_seed",
        "scoring.feature_cache", "scoring.feature_memory_mb", "analysis.stages", "analysis.ihvp_lambda_c",
        "analysis.ihvp_iterations", "analysis.ihvp_entries", "analysis.generate_tokens", "analysis.retrain_single",
        "analysis.retrain_labels", "analysis.retrain_fraction", "analysis.retrain_seeds", "analysis.noise_seeds",
        "analysis.lds_subsets", "analysis.lds_fraction", "analysis.cf_prompts", "analysis.cf_methods",
        "analysis.metagrad_prompts", "analysis.retrain_workers", "analysis.stability_train", "analysis.stability_test",
        "analysis.stability_max_train", "checks.samples", "checks.rows", "checks.columns", "device", "dtype",
        "model.load_in"}
    # suggestions only: any other value is allowed
    assert set(RULES) - enforced == {"model.name"}


@pytest.mark.parametrize("path, bad, named", ENFORCED, ids=[f"{p}={b!r}" for p, b, _ in ENFORCED])
def test_every_rule_refuses_a_bad_value_naming_the_field(path, bad, named):
    with pytest.raises(InputError, match=f"^spec field '{re.escape(named)}' "):
        spec_from_dict(_nested(path, bad))


@pytest.mark.parametrize("path", [p for p, r in RULES.items() if r["choices"] is not None])
def test_every_choice_is_accepted(path):
    choices = list(spec_rule(path)["choices"])
    values = [choices] if typing.get_origin(field_at(RunSpec, path)[1]) is tuple else choices
    for value in values:  # scoring.checkpoints all and loss on the sequence: what every other choice may need
        data = {"train": {"loss_on": "sequence"}, "scoring": {"checkpoints": "all"}}
        *parents, leaf = path.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        spec_from_dict(data)


@pytest.mark.parametrize("data, message", [
    ({"train": {"lr": 0}}, "spec field 'train.lr' must be positive, got 0.0"),
    ({"lora": {"r": -1}}, "spec field 'lora.r' must be positive, got -1"),
    ({"lora": {"dropout": 1.0}}, "spec field 'lora.dropout' must be in [0, 1), got 1.0"),
    ({"analysis": {"lds_fraction": 1.0}}, "spec field 'analysis.lds_fraction' must be in (0, 1), got 1.0"),
    ({"analysis": {"retrain_fraction": 0}}, "spec field 'analysis.retrain_fraction' must be in (0, 1), got 0.0"),
    ({"scoring": {"proj_seed": -1}}, "spec field 'scoring.proj_seed' must be >= 0, got -1"),
    ({"train": {"max_grad_norm": -0.5}}, "spec field 'train.max_grad_norm' must be >= 0, got -0.5"),
    ({"device": "tpu"}, "spec field 'device' must be one of auto, cpu, cuda, got 'tpu'"),
    ({"scoring": {"checkpoints": "some"}}, "spec field 'scoring.checkpoints' must be one of last, all, got 'some'"),
    ({"scoring": {"methods": []}}, "spec field 'scoring.methods' must name at least one method"),
    ({"scoring": {"methods": ["gradsim", "magic"]}},
     f"spec field 'scoring.methods[1]' names unknown method 'magic'; valid: {', '.join(METHOD_NAMES)}"),
    ({"scoring": {"methods": ["gradsim", "gradsim"]}},
     "spec field 'scoring.methods' lists an entry twice: ['gradsim', 'gradsim']"),
    ({"analysis": {"stages": ["x"]}},
     f"spec field 'analysis.stages[0]' names unknown analysis 'x'; valid: {', '.join(ANALYSES)}"),
    ({"analysis": {"ihvp_lambda_c": [1.0, 0]}}, "spec field 'analysis.ihvp_lambda_c[1]' must be positive, got 0.0"),
    ({"analysis": {"ihvp_iterations": [1, -1]}}, "spec field 'analysis.ihvp_iterations[1]' must be >= 0, got -1"),
    ({"lora": {"target_modules": []}}, "spec field 'lora.target_modules' must name at least one module"),
    # rules across fields (or beyond one rule) stay code, with their own messages
    ({"analysis": {"lds_subsets": 2}}, "spec field 'analysis.lds_subsets' must be 0 (no LDS) or at least 3"),
    ({"analysis": {"stages": ["convergence"]}}, "spec field 'analysis.stages' includes convergence, which compares "
                                                "every epoch checkpoint: set scoring.checkpoints to all"),
])
def test_messages_are_those_of_the_hand_written_checks(data, message):
    with pytest.raises(InputError) as e:
        spec_from_dict(data)
    assert str(e.value).startswith(message), str(e.value)


def test_suggestions_are_not_enforced():
    spec = spec_from_dict({"model": {"name": "my-org/my-model"}, "lora": {"target_modules": ["c_attn"]}})
    assert spec.model.name == "my-org/my-model" and spec.lora.target_modules == ("c_attn",)
    assert "tiny" in spec_rule("model.name")["suggest"]


def test_the_device_choice_is_declared_on_the_field():
    assert spec_rule("device")["choices"] == ("auto", "cpu", "cuda")
    assert spec_rule("train.template") == {}  # no rule: the template's form is checked in code


def test_spec_hashes_did_not_change():
    """The specs' hashes (run folders are named by them): rules as field metadata left them as they were; a new field
    changes them all, on purpose (CONTRIBUTING, "Add a spec field")."""
    assert {n: s.spec_hash[:16] for n, s in PRESETS.items()} == {
        "paper": "0b29359b98dc7d43", "quick": "49581b74f452da11"}
    assert RunSpec().spec_hash[:16] == "1878de6351625b95"
    assert {(m, t): demo_spec(m, t).spec_hash[:16] for m in ("tiny", "smollm2-135m") for t in DEMO_TASKS} == {
        ("tiny", "grammars"): "09ade36557d1142d", ("tiny", "harmful_s"): "16dbf071eef38cc4",
        ("smollm2-135m", "grammars"): "ef568746ee1d16be", ("smollm2-135m", "harmful_s"): "f1806056683bf375"}
