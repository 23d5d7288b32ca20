"""Shared fixtures: the tiny model/tokenizer and small task data (built in memory, nothing downloaded)."""

import os

import pytest

from engine.catalog.methods import CATALOG

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from engine.model.base import build_tiny_tokenizer

    return build_tiny_tokenizer()


TINY_SPEC = {
    "name": "tiny-grammars",
    "task": {"name": "grammars", "seed": 0, "n_train_per_label": 3, "n_test_per_label": 1},
    "model": {"name": "tiny"},
    "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
    "train": {"epochs": 2, "batch_size": 8, "lr": 0.01, "max_length": 48},
    # every method, RepT too (it is not a default one: engine.catalog.methods.REPT_NOT_DEFAULT)
    "scoring": {"methods": list(CATALOG), "checkpoints": "all", "shard_size": 16, "query_index": True},
    # no analysis, not even the stability check that is on by default (the fixtures below run it; it re-scores
    # every method several times, which the many tests of this run do not need)
    "analysis": {"stages": []},
}


@pytest.fixture(scope="session")
def tiny_spec():
    """The spec (as a dict) of the small tiny-model run used across test packages."""
    return dict(TINY_SPEC)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A complete run folder of the tiny pipeline (all methods, 2 checkpoints, 30 train, 10 test, with its query
    index: copy it before changing it)."""
    from engine.pipeline.run import run_pipeline
    from engine.spec.load import spec_from_dict

    runs = tmp_path_factory.mktemp("runs")
    return run_pipeline(spec_from_dict(TINY_SPEC), runs, progress=False)


@pytest.fixture(scope="session")
def tiny_store(tiny_run, tmp_path_factory):
    """A DuckDB store file holding ``tiny_run``; returns its path."""
    import store

    path = tmp_path_factory.mktemp("store") / "influence.duckdb"
    with store.Store(path) as s:
        s.ingest_run(tiny_run)
    return path


ANALYSIS_STAGES = {"stages": ["ihvp", "convergence", "retrain", "stability"], "retrain_single": 1, "retrain_labels": 1,
                   "retrain_seeds": 2, "noise_seeds": 2, "lds_subsets": 4, "cf_prompts": 1, "generate_tokens": 4,
                   "ihvp_iterations": [1, 10, 100], "metagrad_prompts": 3}


@pytest.fixture(scope="session")
def tiny_analysis_run(tmp_path_factory):
    """The tiny run with the three analysis stages (at most 14 retrainings: 2 noise, 1 single, 1 label, 2 random,
    up to 4 top-k, 4 LDS subsets), four methods and metagrad on 3 prompts."""
    from engine.pipeline.run import run_pipeline
    from engine.spec.load import spec_from_dict

    spec = {**TINY_SPEC, "name": "tiny-analyses", "analysis": ANALYSIS_STAGES,
            "scoring": {**TINY_SPEC["scoring"], "methods": ["gradsim", "datainf", "tracin", "exact"]}}
    return run_pipeline(spec_from_dict(spec), tmp_path_factory.mktemp("analysis-runs"), progress=False)


def write_unlabelled_dataset(path, n_train_per_label=3, n_test_per_label=1):
    """A JSONL dataset without a label column (the user's own data as it usually is): the tiny grammars rows with
    their labels dropped, one ``split`` column. Returns ``path``."""
    import json

    from engine.data.tasks import build_task

    task = build_task("grammars", seed=0, n_train_per_label=n_train_per_label, n_test_per_label=n_test_per_label)
    rows = [{"prompt": s.prompt, "response": s.response, "split": split}
            for split, ss in (("train", task.train), ("test", task.test)) for s in ss]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def unlabelled_data(tmp_path):
    """:func:`write_unlabelled_dataset` into ``tmp_path/unlabelled.jsonl`` (30 train, 10 test rows, no labels)."""
    return write_unlabelled_dataset(tmp_path / "unlabelled.jsonl")


UNLABELLED_METHODS = ["gradsim", "datainf", "tracin", "repsim", "gradsim_proj", "ekfac", "bm25"]
UNLABELLED_ANALYSES = {"stages": ["ihvp", "convergence", "retrain", "stability"], "retrain_single": 1, "retrain_labels": 1,
                       "retrain_seeds": 1, "noise_seeds": 1, "lds_subsets": 3, "cf_prompts": 1,
                       "generate_tokens": 4, "ihvp_iterations": [1, 10]}


@pytest.fixture(scope="session")
def tiny_unlabelled_run(tmp_path_factory):
    """The tiny pipeline on an unlabelled dataset file (30 train, 10 test, no labels), seven methods (every feature
    kind) and every analysis (small retraining plan)."""
    from engine.pipeline.run import run_pipeline
    from engine.spec.load import spec_from_dict

    data = write_unlabelled_dataset(tmp_path_factory.mktemp("unlabelled") / "data.jsonl")
    spec = {**TINY_SPEC, "name": "tiny-unlabelled", "task": {"name": "file", "path": str(data)},
            "analysis": UNLABELLED_ANALYSES, "scoring": {**TINY_SPEC["scoring"], "methods": UNLABELLED_METHODS}}
    return run_pipeline(spec_from_dict(spec), tmp_path_factory.mktemp("unlabelled-runs"), progress=False)


# ---- a "foreign" adapter: fine-tuned with transformers.Trainer + peft in the test, not with engine.model.finetune ----

FOREIGN_TARGETS = ["k_proj", "o_proj", "up_proj"]  # not the paper's q/v, on purpose
FOREIGN_TEMPLATE = "[INST] {prompt} [/INST] {response}"


def _trainer_adapter(root, targets=FOREIGN_TARGETS, r=4, alpha=16, rslora=True, epochs=3):
    """Fine-tune the tiny model with HF Trainer on a small grammars set; returns (base, out, dataset) paths.

    The training text is tokenised here, jointly, as a typical SFT script does (loss on every token), so nothing
    of the engine's formatting is involved; Trainer writes ``out/checkpoint-<step>/`` every epoch (with its
    trainer_state.json) and ``trainer.save_model(out)`` the final adapter.
    """
    import json

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, PrinterCallback, Trainer, TrainingArguments

    from engine.data.tasks import build_task
    from engine.model.base import build_tiny_model, build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    base = root / "base"
    build_tiny_model(len(tok)).save_pretrained(base)
    tok.save_pretrained(base)
    task = build_task("grammars", seed=0, n_train_per_label=2, n_test_per_label=1)
    dataset = root / "data.jsonl"
    rows = [{"prompt": s.prompt, "response": s.response, "label": s.label, "split": split}
            for split, ss in (("train", task.train), ("test", task.test)) for s in ss]
    dataset.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")

    texts = [tok(FOREIGN_TEMPLATE.format(prompt=s.prompt, response=s.response))["input_ids"][:47]
             + [tok.eos_token_id] for s in task.train]

    def collate(batch):
        T = max(len(b) for b in batch)
        ids = torch.full((len(batch), T), tok.pad_token_id)
        mask = torch.zeros((len(batch), T), dtype=torch.long)
        for i, b in enumerate(batch):
            ids[i, :len(b)] = torch.tensor(b)
            mask[i, :len(b)] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.where(mask.bool(), ids, -100)}

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets), task_type="CAUSAL_LM",
        use_rslora=rslora))
    out = root / "out"
    args = TrainingArguments(output_dir=str(out), num_train_epochs=epochs, per_device_train_batch_size=4,
                             learning_rate=5e-3, save_strategy="epoch", logging_steps=1, report_to="none",
                             use_cpu=True, seed=0, save_only_model=True, disable_tqdm=True, log_level="error")
    trainer = Trainer(model=model, args=args, train_dataset=texts, data_collator=collate)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    trainer.save_model(str(out))
    return base, out, dataset


@pytest.fixture(scope="session")
def foreign_adapter(tmp_path_factory):
    """(base model folder, Trainer output folder with checkpoint-5/10/15 and the final adapter, dataset JSONL)."""
    return _trainer_adapter(tmp_path_factory.mktemp("foreign"))
