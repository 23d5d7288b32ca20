"""Every bad adapter gets a message naming the folder or field, exits with status 2, and writes nothing.

Each case starts from a copy of the Trainer-made adapter (``foreign_adapter``) and breaks one thing.
"""

import json
import shutil

import pytest
import torch

from engine.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture
def case(foreign_adapter, tmp_path):
    """A writable copy of (base, Trainer output, dataset) and a function that runs ``attribute`` on it."""
    base, out, dataset = foreign_adapter
    b, o = tmp_path / "base", tmp_path / "out"
    shutil.copytree(base, b)
    shutil.copytree(out, o)
    cfg = json.loads((o / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(b)
    for folder in [o, *o.glob("checkpoint-*")]:
        (folder / "adapter_config.json").write_text(json.dumps({**json.loads(
            (folder / "adapter_config.json").read_text()), "base_model_name_or_path": str(b)}))
    store = tmp_path / "data" / "s.duckdb"

    def run(*extra, model=b, adapter=o, capsys=None):
        code = main(["attribute", "--model", str(model), "--adapter", str(adapter), "--dataset", str(dataset),
                     "--methods", "gradsim", "--store", str(store), "--quiet", *extra])
        return code

    return b, o, store, run


def _edit_config(folder, **changes):
    p = folder / "adapter_config.json"
    p.write_text(json.dumps({**json.loads(p.read_text()), **changes}))


def _refused(run, capsys, store, *expected, extra=()):
    capsys.readouterr()  # drop what the case's own set-up printed
    code = run(*extra)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in err
    for text in expected:
        assert text in err, err
    assert not (store.parent / "runs").exists() or list((store.parent / "runs").iterdir()) == []
    assert not store.exists()
    return err


def test_the_copy_itself_is_fine(case, capsys):
    b, o, store, run = case
    assert run("--no-ingest") == 0, capsys.readouterr().err


def test_no_adapter_config(case, capsys):
    b, o, store, run = case
    (o / "adapter_config.json").unlink()
    _refused(run, capsys, store, str(o), "adapter_config.json", "not a peft adapter folder")


def test_no_weights(case, capsys):
    b, o, store, run = case
    (o / "adapter_model.safetensors").unlink()
    _refused(run, capsys, store, str(o), "no adapter_model.safetensors")


def test_pickle_weights_are_never_loaded(case, capsys):
    b, o, store, run = case
    (o / "adapter_model.safetensors").rename(o / "adapter_model.bin")
    _refused(run, capsys, store, "adapter_model.bin", "pickle")


def test_other_base_model_name(case, capsys):
    b, o, store, run = case
    _edit_config(o, base_model_name_or_path="meta-llama/Llama-2-7b-hf")
    _refused(run, capsys, store, "meta-llama/Llama-2-7b-hf", "base_model_name_or_path", str(b))


def test_layer_shapes_of_another_model(case, capsys, tmp_path):
    b, o, store, run = case
    from transformers import LlamaConfig, LlamaForCausalLM

    other = tmp_path / "wide" / "base"  # same folder name, other widths: only the shapes can tell
    cfg = json.loads((b / "config.json").read_text())
    model = LlamaForCausalLM(LlamaConfig(**{**cfg, "hidden_size": 32, "intermediate_size": 64}))
    model.save_pretrained(other)
    for f in b.iterdir():
        if f.name.startswith("tokenizer") or f.name == "special_tokens_map.json":
            shutil.copy(f, other / f.name)
    err = _refused(lambda *e: run(*e, model=other), capsys, store, "does not fit the base model", "lora_A")
    assert "self_attn" in err or "mlp" in err  # names the module


def test_checkpoint_of_another_adapter(case, capsys):
    b, o, store, run = case
    _edit_config(o / "checkpoint-5", r=8)
    _refused(run, capsys, store, "checkpoint-5", "is not a checkpoint of adapter", "r = 8",
             extra=("--checkpoints", str(o)))


def test_checkpoint_with_other_shapes(case, capsys):
    b, o, store, run = case
    from safetensors.torch import load_file, save_file

    path = o / "checkpoint-10" / "adapter_model.safetensors"
    state = load_file(str(path))
    key = next(k for k in state if "lora_A" in k)
    state[key] = torch.zeros(state[key].shape[0], state[key].shape[1] + 1)
    save_file(state, str(path))
    _refused(run, capsys, store, "checkpoint-10", "other LoRA matrices", extra=("--checkpoints", str(o)))


def test_remote_code_needs_the_flag(case, capsys):
    b, o, store, run = case
    cfg = json.loads((b / "config.json").read_text())
    (b / "config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoModelForCausalLM": "modeling_x.X"}}))
    _refused(run, capsys, store, "trust_remote_code", "auto_map")


def test_not_a_lora_adapter(case, capsys):
    b, o, store, run = case
    _edit_config(o, peft_type="IA3")
    _refused(run, capsys, store, "peft_type is 'IA3'", "only LoRA")


def test_dora_is_refused(case, capsys):
    b, o, store, run = case
    _edit_config(o, use_dora=True)
    _refused(run, capsys, store, "use_dora", "DoRA")


def _peft_adapter(base, folder, target_modules: list[str]):
    """An adapter on ``target_modules`` made with peft alone (r=2, untrained), saved to ``folder`` for ``base``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=2, target_modules=target_modules, task_type="CAUSAL_LM"))
    model.save_pretrained(folder)
    _edit_config(folder, base_model_name_or_path=str(base))
    return folder


def test_lora_on_an_embedding_is_refused(case, capsys, tmp_path):
    b, o, store, run = case
    emb = _peft_adapter(b, tmp_path / "emb", ["embed_tokens", "q_proj"])
    _refused(lambda *e: run(*e, adapter=emb), capsys, store, "embed_tokens", "only LoRA on linear layers")


def test_lora_on_the_lm_head_is_refused(case, capsys, tmp_path):
    """The head is applied to gathered loss positions only, in checkpointed chunks: no per-sample gradients there
    (it crashed in the gradient pass before it was refused)."""
    b, o, store, run = case
    head = _peft_adapter(b, tmp_path / "head", ["q_proj", "lm_head"])
    _refused(lambda *e: run(*e, adapter=head), capsys, store, str(head), "lm_head", "outside the decoder")


def test_checkpoints_without_adapter_is_a_spec_error(tmp_path):
    from engine.errors import InputError
    from engine.spec.load import spec_from_dict

    with pytest.raises(InputError, match="model.checkpoints.*model.adapter"):
        spec_from_dict({"model": {"name": "tiny", "checkpoints": [str(tmp_path)]}})


def test_retrain_on_an_adapter_needs_the_recipe(tmp_path):
    from engine.errors import InputError
    from engine.spec.load import spec_from_dict

    spec = {"model": {"name": "tiny", "adapter": str(tmp_path)}, "analysis": {"stages": ["retrain"]}}
    with pytest.raises(InputError, match="recipe"):
        spec_from_dict(spec)
    with pytest.raises(InputError, match="recipe"):
        spec_from_dict({**spec, "preset": "quick"})  # a preset's recipe is not the adapter's
    ok = spec_from_dict({**spec, "train": {"epochs": 2, "batch_size": 4, "lr": 1e-3}})
    assert ok.analysis.stages == ("retrain",)
    # the quick preset's metagrad replays a run the engine fine-tuned: not for an adapter, unless asked (refused)
    quick = spec_from_dict({**spec, "preset": "quick", "train": {"epochs": 2, "batch_size": 4, "lr": 1e-3}})
    assert quick.analysis.metagrad_prompts == 0 and "retrain" in quick.analysis.stages
    with pytest.raises(InputError, match="metagrad_prompts' needs a run the engine fine-tunes"):
        spec_from_dict({**spec, "train": {"epochs": 2, "batch_size": 4, "lr": 1e-3},
                        "analysis": {"stages": ["retrain"], "metagrad_prompts": 2}})
