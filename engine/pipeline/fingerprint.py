"""The settings fingerprint of a run: the settings that decide whether two attribution results are comparable
(public comparisons of influence tools needed about ten of them aligned before two EK-FAC libraries agreed). Written
into every pipeline run's manifest (``fingerprint``) and shown on the run's page.

Fields (a dict of plain JSON values):

- ``loss_positions``: where the training loss, and so every gradient, is taken: ``response`` (the prompt masked)
  or ``sequence`` (every token), with ``prompt_masked`` and ``preprocessing`` (``paper``: left pads in the loss)
  and ``pad_attention`` (how those pads attend: ``train.pad_attention``);
- ``precision``: the model compute (``spec.dtype``), the per-sample gradients (always float32) and each method's
  scoring arithmetic (``scoring_dtype``);
- ``attention``: the attention kernel the model ran (``eager``, ``sdpa``, ...), read from the loaded model;
- ``damping``: per method with a damping, ``lambda_c`` (λ_l = mean(g_l²) / λ_c per LoRA matrix);
- ``projection``: per projected method, ``{dim, seed, kind}``;
- ``query``: how a test prompt becomes a query: one query per test sample, the gradient of its mean per-token loss
  over the loss positions (no aggregation over prompts; the Behaviour page averages scores afterwards).
"""

from __future__ import annotations

from engine.scoring.methods.base import ScoringMethod
from engine.spec.run_spec import RunSpec

QUERY = "one query per test sample: the gradient of its mean per-token loss over the loss positions"


def attention_kernel(model) -> str:
    """The attention implementation of a (peft-wrapped) transformers model, or "unknown"."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return str(getattr(getattr(base, "config", None), "_attn_implementation", None) or "unknown")


def fingerprint(spec: RunSpec, methods: list[ScoringMethod], model) -> dict:
    """The run's settings fingerprint (see the module docstring)."""
    t = spec.train
    return {
        "loss_positions": t.loss_on, "prompt_masked": t.loss_on == "response", "preprocessing": t.preprocessing,
        "pad_attention": t.pad_attention,
        "precision": {"model": spec.dtype, "gradients": "float32",
                      "scoring_dtype": {m.name: m.params.dtype for m in methods if hasattr(m.params, "dtype")}},
        "attention": attention_kernel(model),
        "damping": {m.name: m.params.lambda_c for m in methods if hasattr(m.params, "lambda_c")},
        "projection": {m.name: {"dim": m.params.proj_dim, "seed": m.params.proj_seed, "kind": m.params.proj_kind}
                       for m in methods if m.proj_key is not None},
        "query": QUERY,
    }
