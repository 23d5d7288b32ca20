"""RepT features: a hidden state and the loss gradient w.r.t. it, at the position that predicts the response.

For each sample, at hidden-state layer ``layer`` (HF ``hidden_states`` numbering: 1..N are the outputs of the
decoder layers, ``-1`` the final normalised state that feeds the LM head, as RepSim reads it):

- ``h``  = hidden state at the last prompt token (position ``prompt_len - 1``); by causality and our
  tokenisation (:mod:`engine.data.encoding`) it equals the prompt-only forward pass;
- ``dh`` = d loss / d hidden state at the same position, where loss = mean next-token cross-entropy over the
  response tokens (+EOS) only, whatever ``train.loss_on`` is. The output at ``prompt_len - 1`` is the prediction
  of the first response token, so at the last layer ``dh`` is exactly the gradient of the first response token's
  loss (divided by the number of response tokens); this is the position the RepT reference code reads.

Returned as ``[n, 2h]`` float32 (``h`` in the first half, ``dh`` in the second). One batched forward/backward:
the sum of per-sample losses is differentiated w.r.t. the layer's hidden states (samples do not interact), and
the LM head is applied only at loss positions. The model must be in eval mode. No parameter ``.grad`` is formed.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from engine.data.encoding import IGNORE, Encoded, collate
from engine.errors import EngineStateError, InputError


def response_labels(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Labels with the loss on response tokens only: ``input_ids`` at positions >= prompt_len, IGNORE elsewhere."""
    T = batch["input_ids"].shape[1]
    pos = torch.arange(T, device=batch["input_ids"].device)[None, :]
    keep = (pos >= batch["prompt_len"][:, None]) & batch["attention_mask"].bool()
    return torch.where(keep, batch["input_ids"], torch.full_like(batch["input_ids"], IGNORE))


def _check_layer(layer: int, n_layers: int) -> None:
    if not (layer == -1 or 1 <= layer <= n_layers):
        raise InputError(f"RepT parameter 'layer' must be -1 or in 1..{n_layers}, got {layer!r}")


def rept_features(model, samples: list[Encoded], pad_id: int, device: torch.device, batch_size: int = 16,
                  layer: int = -1, desc: str = "RepT features", progress: bool = True) -> torch.Tensor:
    """``[n, 2h]`` float32 (CPU): ``[h, dh]`` per sample in input order; see the module docstring."""
    if model.training:
        raise EngineStateError("RepT features need model.eval() (dropout off)")
    base = model.get_base_model()
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    _check_layer(layer, base.config.num_hidden_layers)
    order = sorted(range(len(samples)), key=lambda i: len(samples[i].input_ids))
    out = []
    with tqdm(total=len(samples), desc=desc, disable=not progress, unit="sample") as bar:
        for start in range(0, len(order), batch_size):
            batch = collate([samples[i] for i in order[start:start + batch_size]], pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            res = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention"],
                          output_hidden_states=True)
            hs = res.hidden_states[layer]
            labels = response_labels(batch)[:, 1:]
            b_idx, t_idx = (labels != IGNORE).nonzero(as_tuple=True)
            logits = head(res.last_hidden_state[b_idx, t_idx]).float()
            tok = torch.nn.functional.cross_entropy(logits, labels[b_idx, t_idx], reduction="none")
            B = labels.shape[0]
            count = torch.zeros(B, device=tok.device).index_add(0, b_idx, torch.ones_like(tok))
            loss = torch.zeros(B, device=tok.device).index_add(0, b_idx, tok) / count.clamp(min=1)
            (dhs,) = torch.autograd.grad(loss.sum(), hs)
            rows = torch.arange(B, device=hs.device)
            pos = (batch["prompt_len"] - 1).clamp(min=0)
            out.append(torch.cat([hs[rows, pos].detach().float(), dhs[rows, pos].float()], dim=1).cpu())
            bar.update(B)
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
    return torch.cat(out)[inverse]
