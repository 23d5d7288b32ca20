"""The demo runs: the ``quick`` preset on a built-in model, for one of two tasks.

``grammars`` (10 grammar rules, 100 train / 30 test) shows class attribution; ``harmful_s`` (the paper's mix S:
20 harmful + 20 benign training rows, 40 harmful test rows; a safe stand-in behaviour) shows harmful-data
identification. The CLI's ``demo`` command and the home page's demo launcher both build their spec here.
"""

from __future__ import annotations

from dataclasses import replace

from engine.errors import InputError
from engine.spec import PRESETS, RunSpec, TaskSpec, validate

# task -> the TaskSpec of its demo (None sizes: the paper's, see engine.tasks.generators)
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
                   model=replace(base.model, name=model), device=device)
    if stages is not None:
        spec = replace(spec, analysis=replace(spec.analysis, stages=tuple(stages)))
    return validate(spec)
