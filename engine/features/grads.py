"""Per-sample LoRA gradients (batched, exact) and prompt representations.

For a LoRA linear ``y = W x`` applied at every position t of a sample, dL/dW = Σ_t (dL/dy_t) x_tᵀ. A forward
hook on every ``lora_A``/``lora_B`` module records its input ``x`` [B, T, in] and output ``y`` [B, T, out];
one ``torch.autograd.grad`` of the SUM of per-sample losses w.r.t. those outputs gives dL_b/dy for every
sample b at once (samples do not interact: no batch norm, and padding is masked out of attention and loss),
and ``einsum("bto,bti->boi")`` turns them into per-sample weight gradients. No parameter ``.grad`` is formed.

The model must be in eval mode (dropout off) so the gradients equal a batch-size-1 loop. Gradients are float32
whatever the model's dtype. Block l is one LoRA matrix; its gradient is flattened row-major like
``weight.flatten()``: [n, out*in].

With ``kfac=True`` the same pass also sums the K-FAC factors of every block over the real (non-padded) tokens:
``act = Σ x xᵀ`` [in, in] and ``grad = Σ dy dyᵀ`` [out, out] (see :class:`KroneckerFactors`), used by the
``kfac``/``ekfac`` methods. It costs two small matmuls per block and batch; callers that do not ask pay nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from engine.data.encoding import Encoded, collate
from engine.errors import EngineStateError
from engine.model.lm_loss import batch_loss


def lora_blocks(model) -> list[tuple[str, torch.nn.Module]]:
    """``(block_name, module)`` for every LoRA A/B linear of the active adapter, in module order."""
    out = []
    for name, mod in model.named_modules():
        for part in ("lora_A", "lora_B"):
            suffix = f".{part}.default"
            if name.endswith(suffix) and isinstance(mod, torch.nn.Linear):
                out.append((name[: -len(".default")].removeprefix("base_model.model."), mod))
    return out


@dataclass(eq=False)
class KroneckerFactors:
    """K-FAC factor sums of every LoRA block over a set of samples (float64, CPU).

    act[l] = Σ x xᵀ [in_l, in_l] and grad[l] = Σ dy dyᵀ [out_l, out_l], summed over every real token of every
    sample (attention mask 1), where x is the block's input and dy = dL_b/dy its output gradient for the
    sample's own (mean-over-tokens) loss; tokens and samples count what was summed. The K-FAC curvature of
    block l is ``grad[l]/samples ⊗ act[l]/tokens`` ≈ (1/n) Σ_i g_i g_iᵀ (row-major ``weight.flatten()`` order).
    Sums, so shards add up (:meth:`merged`). ``eq=False``: compared and hashed by identity (methods cache their
    eigendecompositions per object).
    """

    act: list[torch.Tensor]
    grad: list[torch.Tensor]
    tokens: int
    samples: int

    @staticmethod
    def merged(parts: list[KroneckerFactors]) -> KroneckerFactors:
        """The factors of the union of the parts' samples."""
        return KroneckerFactors(act=[sum(a) for a in zip(*(p.act for p in parts))],
                                grad=[sum(g) for g in zip(*(p.grad for p in parts))],
                                tokens=sum(p.tokens for p in parts), samples=sum(p.samples for p in parts))


@dataclass
class SampleFeatures:
    """grads: per block [n, d_l] float32 (CPU); reps: [n, h] float32; loss: [n] per-sample loss;
    kfac: the K-FAC factor sums when asked for (``sample_features(..., kfac=True)``), else None."""

    grads: list[torch.Tensor]
    reps: torch.Tensor
    loss: torch.Tensor
    block_names: tuple[str, ...]
    kfac: KroneckerFactors | None = None


class _Recorder:
    """Forward hooks that keep each LoRA module's input and output for the current batch."""

    def __init__(self, blocks):
        self.blocks = blocks
        self.inputs: list[torch.Tensor | None] = [None] * len(blocks)
        self.outputs: list[torch.Tensor | None] = [None] * len(blocks)
        self.handles = []

    def __enter__(self):
        for i, (_, mod) in enumerate(self.blocks):
            self.handles.append(mod.register_forward_hook(self._hook(i)))
        return self

    def _hook(self, i):
        def hook(_mod, args, output):
            self.inputs[i] = args[0].detach()
            self.outputs[i] = output
        return hook

    def clear(self) -> None:
        self.inputs = [None] * len(self.blocks)
        self.outputs = [None] * len(self.blocks)

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles.clear()


def _sparse_loss(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean loss [B] and last-layer hidden states [B, T, h] (the head only at positions that carry a
    loss, in chunks: :func:`engine.model.lm_loss.batch_loss`)."""
    return batch_loss(model, batch)


def _add_factors(act, grad, rec, dys, mask) -> None:
    """Add this batch's ``Σ x xᵀ`` and ``Σ dy dyᵀ`` over the real tokens (``mask`` [B, T] bool) to the sums.

    Blocks fed the very same input tensor (the q and v ``lora_A`` of a layer) share one ``Σ x xᵀ``: one
    accumulator object in ``act`` (from the first batch on; 30 x 2.6 MB for SmolLM2), computed once per batch.
    """
    seen: dict[tuple, int] = {}
    for i, (x, dy) in enumerate(zip(rec.inputs, dys)):
        key = (x.data_ptr(), tuple(x.shape), x.stride(), x.dtype)  # all inputs stay alive: same key, same data
        if key in seen:  # one accumulator for the blocks fed this input (the same tensor object, summed once)
            act[i] = act[seen[key]]
        else:
            seen[key] = i
            xm = x[mask].float()
            if act[i] is None:
                act[i] = torch.zeros(x.shape[-1], x.shape[-1], dtype=torch.float64, device=x.device)
            act[i] += (xm.T @ xm).double()
        if dy is not None:
            dym = dy[mask].float()
            grad[i] += (dym.T @ dym).double()


def sample_features(model, samples: list[Encoded], pad_id: int, device: torch.device, batch_size: int = 16,
                    desc: str = "gradients", progress: bool = True, kfac: bool = False,
                    rows_sink: Callable[[torch.Tensor, list[torch.Tensor]], None] | None = None) -> SampleFeatures:
    """Per-sample LoRA gradients, final-layer hidden state at the last prompt token, and loss.

    Samples are batched in order of length (less padding) and returned in input order. Returns CPU float32
    tensors; memory on the device is bounded by ``batch_size``. ``kfac``: also sum the K-FAC factors
    (:class:`KroneckerFactors`) over these samples. ``rows_sink``: each batch's gradients are handed to
    ``rows_sink(rows, [G_l [b, d_l] float32 CPU])`` (``rows``: their input positions) instead of being kept, and
    the result's ``grads`` are empty [0, d_l] blocks (the feature stage streams them into the shard file).
    """
    if model.training:
        raise EngineStateError("per-sample gradients need model.eval() (dropout off) to be exact")
    blocks = lora_blocks(model)
    if not blocks:
        raise EngineStateError("the model has no LoRA blocks (no lora_A/lora_B linear of the active adapter): "
                               "check lora.target_modules against the model's module names")
    order = sorted(range(len(samples)), key=lambda i: len(samples[i].input_ids))
    n = len(samples)
    # the results, allocated once and filled at each sample's own row: no per-batch pieces to concatenate and
    # reorder (three copies of a shard's gradients at once, 0.9 GB each for 1k SmolLM2 samples)
    grads: list[torch.Tensor | None] = [None] * len(blocks)  # [n, d_l], allocated at the first batch's dtype
    reps: torch.Tensor | None = None  # [n, h], allocated when the first batch shows h
    losses = torch.empty(n)
    f64 = {"dtype": torch.float64, "device": device}
    act: list = [None] * len(blocks) if kfac else []  # made at the first batch, shared where inputs are
    gcov = [torch.zeros(m.out_features, m.out_features, **f64) for _, m in blocks] if kfac else []
    tokens = 0
    with _Recorder(blocks) as rec, tqdm(total=len(samples), desc=desc, disable=not progress, unit="sample") as bar:
        for start in range(0, len(order), batch_size):
            rows = torch.tensor(order[start:start + batch_size], dtype=torch.long)  # the batch's input positions
            batch = collate([samples[i] for i in rows.tolist()], pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            loss, hidden = _sparse_loss(model, batch)
            dys = torch.autograd.grad(loss.sum(), rec.outputs, allow_unused=True)
            batch_grads = []
            for i, (x, dy) in enumerate(zip(rec.inputs, dys)):
                if dy is None:  # a block the loss does not reach (cannot happen for q/v, kept for safety)
                    dy = torch.zeros(*x.shape[:2], blocks[i][1].out_features, device=x.device)
                g = torch.einsum("bto,bti->boi", dy.float(), x.float())  # bfloat16 under an autocast (the check)
                if rows_sink is not None:
                    batch_grads.append(g.reshape(g.shape[0], -1).cpu())
                    continue
                if grads[i] is None:
                    grads[i] = torch.empty(n, g.shape[1] * g.shape[2], dtype=g.dtype)
                grads[i][rows] = g.reshape(g.shape[0], -1).cpu()
            if rows_sink is not None:
                rows_sink(rows, batch_grads)
                del batch_grads
            if kfac:
                mask = batch["token_mask"]  # the sample's positions (its own leading pads carry loss: paper)
                _add_factors(act, gcov, rec, dys, mask)
                tokens += int(mask.sum())
            idx = (batch["prompt_len"] - 1).clamp(min=0)
            if reps is None:
                reps = torch.empty(n, hidden.shape[-1])
            reps[rows] = hidden[torch.arange(hidden.shape[0], device=hidden.device), idx].float().detach().cpu()
            losses[rows] = loss.detach().float().cpu()
            bar.update(len(rows))
            # nothing of this batch outlives it: the next batch's tensors then take the same places on the heap
            # instead of settling around this one's leftovers (SmolLM2: ~200 MB of freed heap kept resident)
            rec.clear()
            del loss, hidden, dys, batch, x, dy, g, idx
    return SampleFeatures(
        grads=[g if g is not None else torch.empty(0, m.out_features * m.in_features) for g, (_, m) in zip(grads, blocks)],
        reps=reps if reps is not None else torch.empty(0, 0),
        loss=losses, block_names=tuple(name for name, _ in blocks),
        kfac=KroneckerFactors([(a if a is not None else torch.zeros(m.in_features, m.in_features, **f64)).cpu()
                               for a, (_, m) in zip(act, blocks)], [g.cpu() for g in gcov], tokens, len(samples))
        if kfac else None,
    )


def merge_features(parts: list[SampleFeatures]) -> SampleFeatures:
    """Concatenate features of consecutive shards (same blocks, in shard order)."""
    names = parts[0].block_names
    if len(parts) == 1:  # nothing to concatenate: no copy (a shard's gradients can be a GB)
        return parts[0]
    bad = next((i for i, p in enumerate(parts) if p.block_names != names), None)
    if bad is not None:
        raise EngineStateError(f"feature shards have different LoRA blocks: shard 0 has {len(names)} "
                               f"({', '.join(names[:2])}, ...), shard {bad} has {len(parts[bad].block_names)}")
    return SampleFeatures(
        grads=[torch.cat([p.grads[l] for p in parts]) for l in range(len(names))],
        reps=torch.cat([p.reps for p in parts]), loss=torch.cat([p.loss for p in parts]), block_names=names,
        kfac=KroneckerFactors.merged([p.kfac for p in parts]) if all(p.kfac is not None for p in parts) else None,
    )


def features_in_shards(model, samples: list[Encoded], pad_id: int, device: torch.device, shard_size: int,
                       batch_size: int = 16, desc: str = "gradients", progress: bool = True,
                       kfac: bool = False) -> SampleFeatures:
    """:func:`sample_features` shard by shard (``shard_size`` samples each), merged in order.

    Every shard depends only on the model and its own samples, so shards can be computed by different
    processes or machines and merged with :func:`merge_features`; the result equals one call on all samples.
    """
    parts = [sample_features(model, samples[i:i + shard_size], pad_id, device, batch_size,
                             f"{desc} [{i}:{min(i + shard_size, len(samples))}]", progress, kfac)
             for i in range(0, len(samples), shard_size)]
    return merge_features(parts)


def token_gradients(model, sample: Encoded, pad_id: int, device: torch.device) -> tuple[list[torch.Tensor], float]:
    """Per-token gradient rows of ONE sample's loss (the mean over its loss tokens, as :func:`sample_features`).

    Returns ``(rows, loss)``: ``rows[l]`` [T, d_l] float32 (CPU), row t = ``vec(dy_t x_t^T)`` for LoRA block l,
    with x_t the block's input and dy_t the loss gradient w.r.t. its output at position t (row-major
    ``weight.flatten()`` order). Summed over t the rows are the sample's gradient (``sample_features``' row): the
    LoRA weight acts on every position separately, so position t's rows are its share of the gradient — what
    the loss gains through the weight's action on token t's activations. The model must be in eval mode.
    """
    if model.training:
        raise RuntimeError("per-token gradients need model.eval() (dropout off) to be exact")
    blocks = lora_blocks(model)
    if not blocks:
        raise RuntimeError("model has no LoRA blocks")
    batch = {k: v.to(device) for k, v in collate([sample], pad_id).items()}
    with _Recorder(blocks) as rec:
        loss, _ = _sparse_loss(model, batch)
        dys = torch.autograd.grad(loss.sum(), rec.outputs, allow_unused=True)
        rows = []
        for i, (x, dy) in enumerate(zip(rec.inputs, dys)):
            if dy is None:
                dy = torch.zeros(*x.shape[:2], blocks[i][1].out_features, device=x.device)
            g = torch.einsum("to,ti->toi", dy[0].float(), x[0].float())
            rows.append(g.reshape(g.shape[0], -1).cpu())
    return rows, float(loss.detach()[0])
