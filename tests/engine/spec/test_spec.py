"""Run specs: YAML loading, validation errors that name the field, presets, stable hash."""

import pytest

from engine.errors import InputError
from engine.spec.load import load_spec, spec_from_dict
from engine.spec.presets import PRESETS
from engine.spec.run_spec import RunSpec


def test_defaults_and_presets_validate():
    spec = spec_from_dict({})
    assert spec.model.name == "tiny" and spec.lora.r == 4
    paper = spec_from_dict({"preset": "paper"})
    assert (paper.lora.r, paper.lora.alpha, paper.lora.dropout) == (4, 32, 0.1)
    assert paper.lora.target_modules == ("q_proj", "v_proj")
    assert (paper.train.batch_size, paper.train.epochs, paper.train.lr, paper.train.max_length) == (24, 10, 5e-5, 128)
    assert paper.train.loss_on == "sequence" and paper.train.template == "[INST] {prompt} [/INST] {response}"
    assert paper.scoring.checkpoints == "all"
    assert PRESETS["quick"].train.epochs < paper.train.epochs
    # the authors' exact setup: their preprocessing, HF Trainer's clipping; the LDS as in the literature
    assert paper.train.preprocessing == "paper" and paper.train.max_grad_norm == 1.0
    # and the attention their transformers 4.46 gave the left pads on CUDA; elsewhere transformers 5.x's
    assert paper.train.pad_attention == "legacy_unmask" and spec.train.pad_attention == "none"
    assert (paper.analysis.lds_subsets, paper.analysis.lds_fraction) == (50, 0.5)
    assert spec.train.preprocessing == "clean" and PRESETS["quick"].train.preprocessing == "clean"


def test_chat_template_is_a_valid_template():
    assert spec_from_dict({"train": {"template": "chat"}}).train.template == "chat"


def test_preset_with_overrides_merges_deeply():
    spec = spec_from_dict({"preset": "paper", "train": {"epochs": 3}, "model": {"name": "smollm2-135m"}})
    assert spec.train.epochs == 3 and spec.train.batch_size == 24 and spec.model.name == "smollm2-135m"


def test_hash_is_stable_across_key_order_and_format(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("train:\n  epochs: 2\n  lr: 0.001\nmodel:\n  name: tiny\n")
    b = tmp_path / "b.json"
    b.write_text('{"model": {"name": "tiny"}, "train": {"lr": 1e-3, "epochs": 2}}')
    assert load_spec(a).spec_hash == load_spec(b).spec_hash
    assert load_spec(a).spec_hash != spec_from_dict({"train": {"epochs": 3}}).spec_hash
    # the name is a label, not a setting
    assert spec_from_dict({"name": "x"}).spec_hash == spec_from_dict({"name": "y"}).spec_hash
    assert spec_from_dict({}).spec_hash == RunSpec().spec_hash


@pytest.mark.parametrize("data, field", [
    ({"train": {"epochs": 0}}, "train.epochs"),
    ({"train": {"epochs": "ten"}}, "train.epochs"),
    ({"train": {"lr": -1}}, "train.lr"),
    ({"train": {"loss_on": "prompt"}}, "train.loss_on"),
    ({"lora": {"dropout": 1.5}}, "lora.dropout"),
    ({"lora": {"rank": 4}}, "lora.rank"),
    ({"device": "tpu"}, "device"),
    ({"scoring": {"methods": ["gradsim", "magic"]}}, "scoring.methods[1]"),
    ({"task": {"name": "chess"}}, "task.name"),
    ({"task": {"name": "file"}}, "task.path"),
    ({"preset": "huge"}, "preset"),
    ({"name": "../escape"}, "run name"),
    ({"train": {"template": "{prompt} only"}}, "train.template"),
    ({"train": 5}, "train"),
    ({"train": {"preprocessing": "raw"}}, "train.preprocessing"),
    ({"train": {"preprocessing": "paper", "loss_on": "response"}}, "train.loss_on"),
    ({"train": {"max_grad_norm": -1}}, "train.max_grad_norm"),
    ({"analysis": {"lds_subsets": 2}}, "analysis.lds_subsets"),
    ({"analysis": {"lds_fraction": 1.0}}, "analysis.lds_fraction"),
    ({"analysis": {"noise_seeds": -1}}, "analysis.noise_seeds"),
    ({"analysis": {"cf_methods": ["gradsim", "magic"]}}, "analysis.cf_methods[1]"),
    ({"analysis": {"metagrad_prompts": -1}}, "analysis.metagrad_prompts"),
    ({"analysis": {"metagrad_prompts": 2, "stages": ["retrain"]}, "model": {"name": "tiny", "adapter": "/a"}},
     "analysis.metagrad_prompts' needs a run the engine fine-tunes"),
])
def test_bad_fields_are_named(data, field):
    with pytest.raises(InputError, match=field.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        spec_from_dict(data)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"train: {epochs: \xff}\n")
    with pytest.raises(InputError, match="bad.yaml.*UTF-8"):
        load_spec(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(InputError, match="broken.yaml.*YAML"):
        load_spec(broken)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("train:\n  epochs: -2\n")
    with pytest.raises(InputError, match=r"wrong.yaml.*train\.epochs"):
        load_spec(wrong)


def test_run_name_defaults_to_task_model_hash():
    spec = spec_from_dict({"model": {"name": "tiny"}})
    assert spec.run_name == f"grammars-tiny-{spec.spec_hash[:8]}"
    assert spec_from_dict({"name": "mine"}).run_name == "mine"


def test_metagrad_prompts_without_the_retrain_stage_do_nothing():
    """As cf_prompts: the quick preset's metagrad with its analyses left out (``demo --analyses none``) is valid."""
    spec = spec_from_dict({"preset": "quick", "analysis": {"stages": []}})
    assert spec.analysis.metagrad_prompts == 2 and spec.analysis.stages == ()
    with_adapter = spec_from_dict({"model": {"name": "tiny", "adapter": "/a"},
                                   "analysis": {"stages": ["stability"], "metagrad_prompts": 2}})
    assert with_adapter.analysis.metagrad_prompts == 2
