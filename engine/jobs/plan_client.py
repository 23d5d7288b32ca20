"""The memory plan of a spec, asked from the Jobs form before a job is queued: ``python -m engine plan --json`` in a
child process (the plan builds the model on torch's meta device; the app imports no torch), on this machine.

Its result is the plan's ``to_dict`` (:mod:`engine.pipeline.plan`): per-stage peaks, disk, the budget and the
proposals. A spec the plan refuses comes back as an :class:`~engine.errors.InputError` with the command's own
``error:`` line, never a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from engine.errors import InputError
from engine.paths import REPO_ROOT

PLAN_TIMEOUT_S = 300  # reading a large dataset and tokenising it is the slow part


def plan_spec(spec: dict, *, memory_gb: float | None = None, gpu_memory_gb: float | None = None,
              device: str | None = None, timeout: float = PLAN_TIMEOUT_S) -> dict:
    """The plan of the spec dict (as the Jobs form builds it: a preset plus changes) as a dict."""
    with tempfile.TemporaryDirectory(prefix="plan-") as folder:
        path = Path(folder) / "spec.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        cmd = [sys.executable, "-m", "engine", "plan", str(path), "--json"]
        if memory_gb:
            cmd += ["--memory-gb", str(memory_gb)]
        if gpu_memory_gb:
            cmd += ["--gpu-memory-gb", str(gpu_memory_gb)]
        if device:
            cmd += ["--device", device]
        try:
            r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                               env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise InputError(f"the memory plan took longer than {timeout:.0f} s (a very large dataset?)") from None
    if r.returncode != 0:
        lines = [x for x in r.stderr.strip().splitlines() if x.startswith("error:")]
        raise InputError(lines[-1].removeprefix("error:").strip() if lines else
                         f"the memory plan failed (exit status {r.returncode})")
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise InputError("the memory plan printed no readable result") from None
