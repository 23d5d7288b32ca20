"""Exact metagradients of a fine-tuning run by replay: how a test loss at the end of training moves with each
training sample's loss weight, differentiated through the run itself (AdamW, its learning-rate schedule, gradient
clipping, the per-sample dropout masks, the data order).

The run (engine.model.finetune) minimises, step by step, ``(1/|B_t|) sum_{i in B_t} w_i L_i(theta_t)`` over the
batches B_t of its fixed schedule; every w_i = 1 is the run itself. The trained weights theta_T(w) are then a
differentiable function of the weights w [n], and the **metagradient** of a test sample z' is

    dL(z'; theta_T(w)) / dw_i   at w = 1,

the exact first-order effect of up-weighting training sample i on z''s loss through the real trajectory (MAGIC,
Ilyas & Engstrom 2025; the replay: Engstrom et al. 2025). The score this module returns follows the rest of the
engine (larger = more responsible): ``s(z_i, z') = -dL/dw_i``, so removing i (w_i 1 -> 0) is predicted to change
the test loss by about ``+s`` — the same prediction the retraining analysis makes from every method's scores.

How (reverse-mode through the optimizer, memory by replay):
1. :func:`record` fine-tunes once more with the run's recipe and keeps, at every step t, the state the step starts
   from: the LoRA weights theta_t and AdamW's moments m_t, v_t (flat, on the CPU) — ``3 x P x T`` numbers for P LoRA
   parameters and T steps; no activations. The recorded run is the original one bit for bit (same seed, order,
   masks), which :func:`record`'s caller checks against the run's adapter.
2. :func:`metagradients` walks the steps backwards carrying the adjoints (lambda_theta, lambda_m, lambda_v) of the
   state after the step, starting from (grad_theta L(z'; theta_T), 0, 0). Per step it recomputes the batch's forward
   (train mode, the step's dropout keys) at theta_t with the weights of the batch as leaves, takes the gradient g_t
   with ``create_graph``, applies clipping and the AdamW update as differentiable tensor code
   (:func:`adamw_update`, the arithmetic of ``torch.optim.AdamW``), and pulls the adjoints back through that map:
   the vector-Jacobian product gives the adjoints of theta_t, m_t, v_t (through the Hessian-vector product of the
   batch loss) and dL/dw_i for the batch's samples. One forward and one double backward per step and test prompt
   (the forward and the first backward are shared by the prompts of one sweep): memory is one step's activations
   plus the recorded states.

Exactness: this is the derivative of the computation the run performs, not of a model of it: tests check it
against central finite differences of whole retrainings (float64), the closed form of one SGD step and AdamW with a
small learning rate. Limits: a base model with dropout of its own outside LoRA (drawn from the global generator,
not replayable per step) is refused, as is a run whose replay does not reproduce its adapter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from engine.data.encoding import Encoded, collate
from engine.errors import InputError
from engine.model.dropout import per_sample_dropout
from engine.model.finetune import batch_terms, finetune, lora_state, set_lora_state
from engine.model.lm_loss import batch_loss
from engine.spec.run_spec import TrainSpec

# torch's clip_grad_norm_ divides by (total norm + this); the replay's clipping is the same function
CLIP_EPS = 1e-6


@dataclass
class Step:
    """One recorded optimizer step: its epoch and batch (training ids), the learning rate it used, AdamW's step
    count after it (1-based), and the flat state it started from: ``theta``, ``m``, ``v`` [P] (CPU, the parameters'
    dtype; m and v are 0 before the first step)."""

    epoch: int
    chunk: list[int]
    lr: float
    count: int
    theta: torch.Tensor
    m: torch.Tensor
    v: torch.Tensor


@dataclass
class Trajectory:
    """A recorded fine-tune: the steps in order, the optimizer's constants, the final LoRA state (peft keys) and
    the seed whose data order and dropout masks the steps used."""

    steps: list[Step]
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    max_grad_norm: float
    seed: int
    final: dict[str, torch.Tensor] = field(default_factory=dict)  # peft state-dict keys
    final_theta: torch.Tensor | None = None  # the same weights, flat [P] in :func:`trainable` order
    update: str = "adamw"  # the optimizer's update rule, a key of UPDATES (fine-tuning uses AdamW)

    @property
    def nbytes(self) -> int:
        """Bytes the recorded states hold (3 x P x T)."""
        return sum(s.theta.nbytes + s.m.nbytes + s.v.nbytes for s in self.steps)


def trainable(model) -> list[tuple[str, torch.nn.Parameter]]:
    """The trainable (LoRA) parameters of a peft model, in ``model.parameters()`` order: the order of the
    optimizer's parameter list in engine.model.finetune, and of every flat vector here."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors]).to("cpu", copy=True)


def _split(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    out, at = [], 0
    for p in like:
        out.append(flat[at:at + p.numel()].view_as(p))
        at += p.numel()
    return out


def check_replayable(model) -> None:
    """InputError unless every source of randomness in a training step is one the replay reproduces: LoRA dropout
    (masks per sample, engine.model.dropout) is; any other active dropout of the base model is not."""
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Dropout) and m.p > 0 and ".lora_dropout." not in f".{name}.":
            raise InputError(f"metagrad: the base model has its own dropout ({name}, p={m.p}), which a replay cannot "
                             "reproduce step by step; metagradients need a base model without it")
    config = getattr(model, "config", None)
    for key in ("attention_dropout", "hidden_dropout", "resid_pdrop", "attn_pdrop", "embd_pdrop"):
        if float(getattr(config, key, 0.0) or 0.0) > 0:
            raise InputError(f"metagrad: the base model's config sets {key} = {getattr(config, key)}, dropout a "
                             "replay cannot reproduce; metagradients need a base model without it")


def record(model, train_set: list[Encoded], pad_id: int, cfg: TrainSpec, device: torch.device,
           initial: dict[str, torch.Tensor], seed: int | None = None) -> Trajectory:
    """Fine-tune ``model`` from the LoRA state ``initial`` with recipe ``cfg`` (every weight 1, data-order seed
    ``seed``, default ``cfg.seed``), keeping the state every step starts from (see the module docstring).
    The model is left at the final state, in eval mode."""

    check_replayable(model)
    set_lora_state(model, initial)
    steps: list[Step] = []
    consts: dict = {}

    def keep(step, epoch, chunk, params, opt):
        group = opt.param_groups[0]
        consts.update(betas=tuple(group["betas"]), eps=float(group["eps"]), weight_decay=float(group["weight_decay"]))
        if group.get("amsgrad") or group.get("maximize"):
            raise InputError("metagrad: the replay implements AdamW without amsgrad and without maximize")
        states = [opt.state.get(p, {}) for p in params]
        zeros = [torch.zeros_like(p) for p in params]
        m = [s.get("exp_avg", z) for s, z in zip(states, zeros)]
        v = [s.get("exp_avg_sq", z) for s, z in zip(states, zeros)]
        if any(not torch.equal(torch.as_tensor(s.get("step", step - 1)).float(), torch.tensor(float(step - 1)))
               for s in states if s):
            raise RuntimeError("metagrad: the optimizer's step count differs from the schedule's")
        steps.append(Step(epoch, list(chunk), float(group["lr"]), step, _flat(params), _flat(m), _flat(v)))

    seed = cfg.seed if seed is None else int(seed)
    finetune(model, train_set, pad_id, cfg, device, progress=False, seed=seed, on_step=keep)
    return Trajectory(steps, consts.get("betas", (0.9, 0.999)), consts.get("eps", 1e-8),
                      consts.get("weight_decay", cfg.weight_decay), float(cfg.max_grad_norm), seed,
                      final=lora_state(model), final_theta=_flat([p for _, p in trainable(model)]))


class _SafeSqrt(torch.autograd.Function):
    """sqrt(v) whose derivative at v = 0 is 0 instead of inf. AdamW's second moment is exactly 0 where a gradient
    has always been 0 (LoRA's A matrices at the first step, when B = 0): there the update m / (sqrt(v) + eps) has
    m = 0 too, and the product's derivative along v is 0, but autograd would form 0 * inf = NaN."""

    @staticmethod
    def forward(ctx, v):
        r = v.sqrt()
        ctx.save_for_backward(r)
        return r

    @staticmethod
    def backward(ctx, grad):
        (r,) = ctx.saved_tensors
        return torch.where(r > 0, grad / (2 * r.clamp_min(torch.finfo(r.dtype).tiny)), torch.zeros_like(grad))


def clip(grads: list[torch.Tensor], max_norm: float) -> list[torch.Tensor]:
    """``torch.nn.utils.clip_grad_norm_`` as a differentiable function: scale by min(1, max_norm / (||g|| + 1e-6))
    (no clipping for max_norm <= 0)."""
    if max_norm <= 0:
        return grads
    total = torch.sqrt(sum((g * g).sum() for g in grads))
    coef = torch.clamp(max_norm / (total + CLIP_EPS), max=1.0)
    return [g * coef for g in grads]


def adamw_update(theta, m, v, g, *, lr: float, count: int, betas: tuple[float, float], eps: float,
                 weight_decay: float):
    """One AdamW step (torch.optim.AdamW's arithmetic, no amsgrad) on tensors, differentiable in every input:
    returns (theta', m', v') with

        theta' = theta (1 - lr wd) - (lr / (1 - b1^c)) m' / (sqrt(v') / sqrt(1 - b2^c) + eps),
        m' = b1 m + (1 - b1) g,   v' = b2 v + (1 - b2) g^2,   c = ``count`` (the step number, 1-based)."""
    b1, b2 = betas
    m2 = b1 * m + (1 - b1) * g
    v2 = b2 * v + (1 - b2) * g * g
    step_size = lr / (1 - b1 ** count)
    denom = _SafeSqrt.apply(v2) / (1 - b2 ** count) ** 0.5 + eps
    return theta * (1 - lr * weight_decay) - step_size * m2 / denom, m2, v2


def sgd_update(theta, m, v, g, *, lr: float, count: int, betas: tuple[float, float], eps: float,
               weight_decay: float):
    """Plain SGD with decoupled weight decay, ``theta' = theta (1 - lr wd) - lr g`` (m, v pass through): the update
    whose one-step metagradient has a closed form, -lr <grad L(z'; theta_1), grad l_i(theta_0)> / B."""
    return theta * (1 - lr * weight_decay) - lr * g, m, v


UPDATES: dict[str, Callable] = {"adamw": adamw_update, "sgd": sgd_update}


def _test_grads(model, names, final: list[torch.Tensor], test_set: list[Encoded], prompts: Sequence[int],
                pad_id: int, device: torch.device) -> list[list[torch.Tensor]]:
    """Per prompt, grad_theta of its mean token loss at the final weights in eval mode (no dropout), as
    attribution measures a test loss: one tensor per trainable parameter."""
    model.eval()
    out = []
    for j in prompts:
        theta = [t.detach().to(device).requires_grad_(True) for t in final]
        batch = {k: v.to(device) for k, v in collate([test_set[j]], pad_id).items()}
        loss = batch_loss(model, batch, dict(zip(names, theta)))[0][0]
        out.append(list(torch.autograd.grad(loss, theta)))
    return out


def metagradients(model, traj: Trajectory, train_set: list[Encoded], test_set: list[Encoded],
                  prompts: Sequence[int], pad_id: int, device: torch.device,
                  progress: Callable[[str], None] | None = None) -> np.ndarray:
    """Scores ``S [len(prompts), n]`` (float64): ``S[k, i] = -dL(z'_{prompts[k]}; theta_T(w)) / dw_i`` at w = 1
    (larger = more responsible; see the module docstring), by one reverse sweep over the recorded steps for all
    the prompts together. The model's LoRA parameters are left at the trajectory's final state, in eval mode."""
    named = trainable(model)
    names, like = [n for n, _ in named], [p for _, p in named]
    n, K, P = len(train_set), len(prompts), len(like)
    dw = torch.zeros(K, n, dtype=torch.float64)
    if not traj.steps or not K:
        return dw.numpy()

    def load(flat: torch.Tensor) -> list[torch.Tensor]:
        return [x.to(device).requires_grad_(True) for x in _split(flat, like)]

    # adjoints of the state after the step being undone, per prompt: (theta, m, v), one tensor per parameter
    lam = [(g, [torch.zeros_like(x) for x in g], [torch.zeros_like(x) for x in g])
           for g in _test_grads(model, names, _split(traj.final_theta, like), test_set, prompts, pad_id, device)]
    # the fused attention kernels (flash, memory-efficient) have no double backward: the replay differentiates the
    # step's gradient through the math kernel, the same function up to rounding
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with per_sample_dropout(model) as rows, sdpa_kernel(SDPBackend.MATH):
        model.train()
        for t in range(len(traj.steps) - 1, -1, -1):
            s = traj.steps[t]
            theta, m, v = load(s.theta), load(s.m), load(s.v)
            w = torch.ones(len(s.chunk), dtype=s.theta.dtype, device=device, requires_grad=True)
            params = dict(zip(names, theta))
            terms = batch_terms(model, train_set, s.chunk, pad_id, device, rows, traj.seed, s.epoch, params=params)
            loss = (terms * w.to(terms.dtype)).mean()
            g = clip(list(torch.autograd.grad(loss, theta, create_graph=True)), traj.max_grad_norm)
            new = [UPDATES[traj.update](th, mm, vv, gg, lr=s.lr, count=s.count, betas=traj.betas, eps=traj.eps,
                                weight_decay=traj.weight_decay) for th, mm, vv, gg in zip(theta, m, v, g)]
            outputs = [x for triple in new for x in triple]  # theta'_p, m'_p, v'_p per parameter p
            inputs = theta + m + v + [w]
            for k in range(K):
                adjoint = [a for triple in zip(*lam[k]) for a in triple]
                back = torch.autograd.grad(outputs, inputs, grad_outputs=adjoint, retain_graph=k < K - 1,
                                           allow_unused=True)
                back = [torch.zeros_like(x) if b is None else b.detach() for b, x in zip(back, inputs)]
                lam[k] = (back[:P], back[P:2 * P], back[2 * P:3 * P])
                dw[k, s.chunk] += back[-1].to("cpu", torch.float64)
            if progress and t % 10 == 0:
                progress(f"metagrad: {len(traj.steps) - t} of {len(traj.steps)} steps undone")
    set_lora_state(model, traj.final)
    model.eval()
    return (-dw).numpy()
