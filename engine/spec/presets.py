"""The presets and the demo runs.

Presets: ``paper`` follows the paper's hyperparameters (the authors' preprocessing, HF Trainer's defaults);
``quick`` is small enough for a CPU demo on the bundled SmolLM2-135M in a few minutes.

The demo runs: the ``quick`` preset on a built-in model, for one of two tasks.

``grammars`` (10 grammar rules, 100 train / 30 test) shows class attribution; ``harmful_s`` (the paper's mix S:
20 harmful + 20 benign training rows, 40 harmful test rows; a safe stand-in behaviour) shows harmful-data
identification. The CLI's ``demo`` command and the home page's demo launcher both build their spec here.
"""

from __future__ import annotations

from dataclasses import replace

from engine.catalog.analyses import ANALYSES
from engine.errors import InputError
from engine.spec.run_spec import AnalysisSpec, LoraSpec, RunSpec, ScoringSpec, TaskSpec, TrainSpec, validate

PRESETS: dict[str, RunSpec] = {
    "paper": RunSpec(
        lora=LoraSpec(r=4, alpha=32, dropout=0.1, target_modules=("q_proj", "v_proj")),
        # the authors' preprocessing and HF Trainer's defaults (AdamW, linear decay, no warm-up, clipping at 1.0),
        # with the attention their transformers 4.46 gave the left pads on CUDA (engine.data.encoding)
        train=TrainSpec(epochs=10, batch_size=24, lr=5e-5, max_length=128, loss_on="sequence",
                        preprocessing="paper", pad_attention="legacy_unmask", max_grad_norm=1.0),
        scoring=ScoringSpec(checkpoints="all"),
        analysis=AnalysisSpec(lds_subsets=50, lds_fraction=0.5),
    ),
    "quick": RunSpec(
        # 6 training samples per rule: every retraining of the retrain stage is a fine-tune of this set
        task=TaskSpec(name="grammars", n_train_per_label=6, n_test_per_label=3),
        lora=LoraSpec(r=4, alpha=32, dropout=0.0, target_modules=("q_proj", "v_proj")),
        train=TrainSpec(epochs=2, batch_size=8, lr=1e-3, max_length=64, loss_on="sequence"),
        scoring=ScoringSpec(checkpoints="all", grad_batch_size=16),
        # the costly stage: every retraining is a fine-tune (see README, "The three analyses", for the count)
        # 2 reshuffles, 1 single sample, 1 label, 2 random k-sets, <= 6 top-k sets, 6 half-size LDS subsets; exact
        # metagradients on the 2 counterfactual prompts (one more fine-tune, replayed backwards)
        analysis=AnalysisSpec(stages=ANALYSES, retrain_single=1, retrain_labels=1, retrain_seeds=2, noise_seeds=2,
                              lds_subsets=6, cf_prompts=2, cf_methods=("datainf", "repsim"), metagrad_prompts=2),
    ),
}

# task -> the TaskSpec of its demo (None sizes: the paper's, see engine.data.tasks.generators)
DEMO_TASKS: dict[str, TaskSpec] = {
    "grammars": PRESETS["quick"].task,
    "harmful_s": TaskSpec(name="harmful_s"),
}


def demo_name(model: str, task: str = "grammars") -> str:
    """``demo-<model>`` for the grammars demo (the name it always had), ``demo-<task>-<model>`` otherwise."""
    return f"demo-{model}" if task == "grammars" else f"demo-{task}-{model}"


def is_demo(run_name: str) -> bool:
    return str(run_name).startswith("demo-")


def demo_spec(model: str = "tiny", task: str = "grammars", device: str = "auto", name: str | None = None,
              stages: tuple[str, ...] | None = None) -> RunSpec:
    """The ``quick`` preset on ``model`` and the demo ``task``; ``stages``: the analyses (None: the preset's,
    all three)."""
    if task not in DEMO_TASKS:
        raise InputError(f"demo task must be one of {', '.join(DEMO_TASKS)}, got {task!r}")
    base = PRESETS["quick"]
    spec = replace(base, name=name or demo_name(model, task), task=DEMO_TASKS[task],
                   model=replace(base.model, name=model), device=device,
                   scoring=replace(base.scoring, query_index=True))  # a demo run answers new prompts (Ask page)
    if stages is not None:
        spec = replace(spec, analysis=replace(spec.analysis, stages=tuple(stages)))
    return validate(spec)
