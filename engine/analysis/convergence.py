"""Analysis 2: do the models and the attributions converge over the epochs?

Two tables:
- ``checkpoint_eval`` — one row per epoch checkpoint c = 0 (the LoRA initialisation, i.e. the base model) .. E:
  mean teacher-forced loss on the training and on the test set, generation accuracy (share of test prompts whose
  greedy continuation contains the reference response) and behaviour rate (share showing the task's target
  behaviour; equals generation accuracy for tasks without a behaviour marker).
- ``score_drift`` — one row per (method, scored checkpoint c >= 2): mean over test samples of the Spearman
  correlation between the method's scores at c and at the previous scored checkpoint, and the share of test
  samples whose top-1 training sample is unchanged. Each method's Acc@1 / Coverage@k per checkpoint is already
  in the ``metrics`` table.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from engine.analysis.outputs import generation_report, sample_losses
from engine.data.encoding import Encoded
from engine.evaluation.metrics import spearman_rows
from engine.model.finetune import set_lora_state


def checkpoint_eval(model, tok, states: Sequence[dict], train_enc: Sequence[Encoded],
                    test_enc: Sequence[Encoded], test_refs: Sequence[str], marker: str | None, device,
                    max_new_tokens: int, batch_size: int = 16,
                    progress: Callable[[str], None] | None = None) -> list[dict]:
    """Rows (checkpoint, train_loss, test_loss, gen_acc, behaviour_rate) for ``states[c]`` = LoRA state of
    epoch c (``states[0]`` the initial one). Leaves the model in the last state."""
    rows = []
    for c, state in enumerate(states):
        if progress:
            progress(f"convergence: checkpoint {c}")
        set_lora_state(model, state)
        train_loss = sample_losses(model, train_enc, tok.pad_token_id, device, batch_size)
        test_loss = sample_losses(model, test_enc, tok.pad_token_id, device, batch_size)
        answer, behaviour = generation_report(model, tok, test_enc, test_refs, marker, device, max_new_tokens,
                                              batch_size)
        rows.append({"checkpoint": c, "train_loss": float(train_loss.mean()), "test_loss": float(test_loss.mean()),
                     "gen_acc": float(answer.mean()), "behaviour_rate": float(behaviour.mean())})
    return rows


def score_drift(method: str, checkpoint: int, S_prev: np.ndarray, S: np.ndarray) -> dict:
    """Stability of one method's scores between consecutive scored checkpoints (both [m, n])."""
    rho = spearman_rows(np.asarray(S), np.asarray(S_prev))
    same = np.asarray(S).argmax(1) == np.asarray(S_prev).argmax(1)
    return {"method": method, "checkpoint": checkpoint, "spearman_prev": float(np.nanmean(rho)),
            "top1_same_prev": float(same.mean())}
