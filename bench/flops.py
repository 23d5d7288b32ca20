"""How close the two costliest passes run to this machine's matmul rate, measured side by side in one run.

    .venv/bin/python -m bench.flops [--model tiny|smollm2-135m ...] [--n 64] [--batch 32] [--repeat 2] [--threads N]

The passes: the per-sample gradient pass (``engine.features.grads.sample_features``, eval mode) and one epoch of
fine-tuning (``engine.model.finetune.finetune``, the quick preset's TrainSpec with ``epochs=1``), on the same
samples (a grammars task, the quick preset's template, max_length, loss_on and LoRA; lora_B set to small random
values so every block carries gradient). The machine's rate: a float32 ``torch.mm`` of two --gemm x --gemm
matrices in the same process and thread count (best of 3 after a warm-up), measured before each pass, so that
the noise of a shared machine hits both. Each pass's time is the best of --repeat; its rate is compared with
the best GEMM rate measured during the same model's runs.

Work is counted from the model's shapes (``model.config``: hidden h, intermediate I, layers L, heads n_h, KV
heads n_kv, head_dim d (h / n_h when absent), vocabulary V) and the LoRA blocks (``lora_blocks``: in x out
each), and from the real token counts of the batches the passes form (the gradient pass sorts samples by length;
fine-tuning takes the batches of ``step_schedule``, each in parts of ``micro_batch_size``). One multiply-add = 2 FLOPs. Per token t of a batch:

- forward linear: L * P + A, where P = 2h(n_h d + 2 n_kv d) + 2 n_h d h + 3 * 2hI (q, k, v, o, gate, up, down)
  and A = sum over LoRA blocks of 2 in out;
- backward linear (activation gradients only: the base weights are frozen, so a frozen linear costs 1x its
  forward, its input gradient): every layer above the lowest LoRA layer l0 in full (P + its LoRA blocks); layer
  l0 only from its output down to its LoRA outputs: o, gate, up, down and the lora_B input gradients (P - Q with
  Q = 2h(n_h d + 2 n_kv d), + its lora_B blocks): the q/k/v projections' and lora_A's input gradients are never
  needed (checked: targets must be q/k/v projections); layers below l0 need none;
- LoRA gradients: A again. The gradient pass's einsum "bto,bti->boi" is 2 B T out in per block; fine-tuning's
  weight gradients dW = dy^T x are the same count.
Per sample of T tokens and layer: attention forward 2 * 2 T^2 d n_h (scores and values; the causal half is NOT
taken off: with padding the kernel gets an explicit mask and computes every block; without padding transformers
asks for is_causal and the CPU kernel skips whole blocks above the diagonal, so the count overstates those);
attention backward 2.5x forward (the CPU flash kernel recomputes the scores, then dP, dV, dQ, dK: torch's own
count) for layers >= l0.
LM head (tied or not, frozen): 2hV per loss position only (``labels[:, 1:] != IGNORE``, engine.model.lm_loss),
times 2 (forward + input gradient), times 3 when the batch's loss positions exceed one chunk
(``HEAD_CHUNK_MB``): then each chunk is checkpointed and its logits recomputed in the backward pass.

Not counted (memory-bound, or small): RMSNorm, rotary embeddings, softmax and the loss's log-softmax, SiLU and
the gate product, residual adds, the embedding gather, masks, AdamW's update, copies to the result rows, the
batch collation. Their time is in the measured seconds, so the % of the matmul rate is a floor on how well the
matmuls themselves run.

"padded" counts what the passes compute: every sample of a batch padded to the batch's longest (B x T_max tokens,
B x T_max^2 attention); "real" counts the useful work on each sample's own tokens; the head is the same in both
(padding carries no loss). The padding overhead is padded / real.

Check: on the first batch of each pass the count is compared with ``torch.utils.flop_counter.FlopCounterMode``
(which registers no formula for the CPU flash attention ops: mapped here to torch's own sdpa formulas); the
matmul part (mm, addmm, bmm) is the independent check of the formulas above. That batch also warms the passes
up before the timings (the forward alone gets one warm-up batch). "Where the time goes": the decoder forward alone (no grad) on the gradient pass's
batches, and the rest of the pass (its forward's graph, head, backward, einsum) as the difference.
"""

from __future__ import annotations

import argparse
import os
import re
import time
import warnings
from dataclasses import dataclass, replace

import torch

MODELS = ("tiny", "smollm2-135m")
PARTS = ("fwd linear", "fwd attention", "head", "bwd linear", "bwd attention", "LoRA grads")
ATTENTION = ("fwd attention", "bwd attention")


@dataclass(frozen=True)
class Shape:
    """The sizes the count needs: per-token linear FLOPs and per-T^2 attention FLOPs (see the module docstring)."""

    hidden: int
    layers: int
    vocab: int
    fwd_linear: int    # per token, forward: L * P + A
    bwd_linear: int    # per token, activation gradients
    lora: int          # per token, A (einsum / LoRA weight gradients)
    fwd_attn: int      # per T^2 of one sample, all layers
    bwd_attn: int      # per T^2 of one sample, layers >= l0
    describe: str


def model_shape(model) -> Shape:
    """The counting constants of a Llama-shaped peft model with LoRA on attention projections."""
    from engine.features.grads import lora_blocks

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = getattr(base.config, "get_text_config", lambda: base.config)()
    h, inter, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    heads = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    d = getattr(cfg, "head_dim", None) or h // heads
    qkv = 2 * h * (heads * d + 2 * kv * d)
    per_layer = qkv + 2 * heads * d * h + 3 * 2 * h * inter
    per_lora: dict[int, int] = {}
    b_only: dict[int, int] = {}
    for name, mod in lora_blocks(model):
        found = re.search(r"layers\.(\d+)\.", name)
        target, part = name.split(".")[-2:]
        if found is None or target not in ("q_proj", "k_proj", "v_proj"):
            raise SystemExit(f"bench.flops counts LoRA on q/k/v projections of numbered layers only, got {name}")
        layer, f = int(found.group(1)), 2 * mod.in_features * mod.out_features
        per_lora[layer] = per_lora.get(layer, 0) + f
        if part == "lora_B":
            b_only[layer] = b_only.get(layer, 0) + f
    l0 = min(per_lora)
    lora = sum(per_lora.values())
    above = range(l0 + 1, L)
    bwd = len(above) * per_layer + sum(per_lora.get(l, 0) for l in above) + (per_layer - qkv) + b_only.get(l0, 0)
    attn = 2 * 2 * d * heads
    return Shape(hidden=h, layers=L, vocab=cfg.vocab_size, fwd_linear=L * per_layer + lora, bwd_linear=bwd,
                 lora=lora, fwd_attn=L * attn, bwd_attn=(L - l0) * attn * 5 // 2,
                 describe=f"h={h} I={inter} L={L} heads={heads}/{kv} head_dim={d} V={cfg.vocab_size} "
                          f"lora_blocks={len(lora_blocks(model))} lowest LoRA layer={l0}")


def loss_positions(e) -> int:
    """The sample's positions that carry a loss (``labels[1:] != IGNORE``, what the head is applied to)."""
    from engine.data.encoding import IGNORE

    return sum(1 for x in e.labels[1:] if x != IGNORE)


def batch_work(shape: Shape, batch: list, padded: bool) -> dict[str, float]:
    """Counted FLOPs of one batch (a list of Encoded) through forward + head + backward + LoRA gradients."""
    from engine.model.lm_loss import HEAD_CHUNK_MB

    lengths = [len(e.input_ids) for e in batch]
    T = max(lengths)
    tokens = len(lengths) * T if padded else sum(lengths)
    squares = len(lengths) * T * T if padded else sum(t * t for t in lengths)
    n_loss = sum(loss_positions(e) for e in batch)
    rows = max(1, (HEAD_CHUNK_MB << 20) // (shape.vocab * 4))
    head_times = 3 if n_loss > rows else 2  # forward + input gradient (+ the checkpointed chunk's recompute)
    return {"fwd linear": tokens * shape.fwd_linear, "fwd attention": squares * shape.fwd_attn,
            "head": head_times * n_loss * 2 * shape.hidden * shape.vocab,
            "bwd linear": tokens * shape.bwd_linear, "bwd attention": squares * shape.bwd_attn,
            "LoRA grads": tokens * shape.lora}


def pass_work(shape: Shape, batches: list[list], padded: bool) -> dict[str, float]:
    out = dict.fromkeys(PARTS, 0.0)
    for b in batches:
        for k, v in batch_work(shape, b, padded).items():
            out[k] += v
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_rate(size: int, device: torch.device, reps: int = 3) -> float:
    """GFLOP/s of a float32 ``torch.mm`` of two size x size matrices: best of ``reps`` after one warm-up."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(size, size, generator=g).to(device)
    b = torch.randn(size, size, generator=g).to(device)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * size ** 3 / best / 1e9


def flop_counter():
    """A FlopCounterMode that also counts the CPU flash attention ops (torch's own sdpa formulas)."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    def fwd(q, k, v, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(q, k, v)

    def bwd(grad_out, q, k, v, *args, out_shape=None, **kwargs):
        return sdpa_backward_flop_count(grad_out, q, k, v)

    aten = torch.ops.aten
    return FlopCounterMode(display=False, custom_mapping={aten._scaled_dot_product_flash_attention_for_cpu: fwd,
                                                          aten._scaled_dot_product_flash_attention_for_cpu_backward: bwd})


def check_line(label: str, counted: dict[str, float], mode) -> str:
    measured = mode.get_flop_counts()["Global"]
    m_attn = sum(v for op, v in measured.items() if "attention" in str(op))
    m_mat = sum(v for op, v in measured.items() if "attention" not in str(op))
    c_attn = sum(counted[k] for k in ATTENTION)
    c_mat = sum(v for k, v in counted.items() if k not in ATTENTION)
    ops = ", ".join(f"{str(op).split('.')[-1]} {v / 1e9:.3f}" for op, v in sorted(measured.items(), key=str))

    def ratio(a, b):
        return f"{a / b:.4f}" if b else "n/a"

    return (f"  FlopCounterMode check, {label}: matmuls counted {c_mat / 1e9:.3f} / measured {m_mat / 1e9:.3f} GFLOP"
            f" = {ratio(c_mat, m_mat)}; attention {c_attn / 1e9:.3f} / {m_attn / 1e9:.3f} = {ratio(c_attn, m_attn)};"
            f" total {ratio(c_mat + c_attn, m_mat + m_attn)}  [measured by op, GFLOP: {ops}]")


def run_model(name: str, args, device: torch.device) -> tuple[list[dict], list[str]]:
    from bench.grads import trained_looking
    from engine.data.encoding import collate, encode
    from engine.data.tasks import build_task
    from engine.features.grads import sample_features
    from engine.model.base import load_base
    from engine.model.finetune import (
        add_lora,
        finetune,
        lora_state,
        micro_batch_size,
        set_lora_state,
        step_schedule,
    )
    from engine.model.lm_loss import lm_parts
    from engine.spec.presets import PRESETS

    spec = PRESETS["quick"]
    model, tok = load_base(name)
    model = trained_looking(add_lora(model, spec.lora, seed=0).to(device))
    state = lora_state(model)
    task = build_task("grammars", seed=0, n_train_per_label=max(1, args.n // 10 + 1), n_test_per_label=1)
    enc = [encode(s, tok, spec.train.template, spec.train.max_length, spec.train.loss_on)
           for s in task.train[: args.n]]
    pad = tok.pad_token_id
    train_cfg = replace(spec.train, epochs=1, batch_size=args.ft_batch or spec.train.batch_size)
    shape = model_shape(model)

    order = sorted(range(len(enc)), key=lambda i: len(enc[i].input_ids))  # as sample_features batches them
    grad_batches = [[enc[i] for i in order[s:s + args.batch]] for s in range(0, len(order), args.batch)]
    micro = micro_batch_size(model, enc, train_cfg)  # a step's batch goes through the model in parts of this size
    ft_batches = [[enc[i] for i in chunk[a:a + micro]]
                  for _, chunk in step_schedule(train_cfg.seed, 1, len(enc), train_cfg.batch_size)
                  for a in range(0, len(chunk), micro)]
    lines = [f"## {name}: {shape.describe}; {len(enc)} samples, gradient batch {args.batch}, fine-tune batch "
             f"{train_cfg.batch_size} in parts of {micro}, threads {torch.get_num_threads()}, device {device}"]

    def grad_pass(samples, batch_size):
        return sample_features(model, samples, pad, device, batch_size, progress=False)

    def ft_pass(samples, cfg):
        finetune(model, samples, pad, cfg, device, progress=False)
        set_lora_state(model, state)  # the next run starts from the same adapter
        model.eval()

    if args.check:  # also the warm-up of both passes
        with flop_counter() as mode:
            grad_pass(grad_batches[0], len(grad_batches[0]))
        lines.append(check_line(f"gradient pass, batch 1 ({len(grad_batches[0])} x "
                                f"{max(len(e.input_ids) for e in grad_batches[0])})",
                                batch_work(shape, grad_batches[0], True), mode))
        with flop_counter() as mode:
            ft_pass(ft_batches[0], replace(train_cfg, batch_size=len(ft_batches[0])))
        lines.append(check_line(f"fine-tune step 1 ({len(ft_batches[0])} x "
                                f"{max(len(e.input_ids) for e in ft_batches[0])})",
                                batch_work(shape, ft_batches[0], True), mode))

    decoder = lm_parts(model)[0]

    def forward_only(batches=grad_batches):
        with torch.no_grad():
            for b in batches:
                batch = {k: v.to(device) for k, v in collate(b, pad).items()}
                decoder(input_ids=batch["input_ids"], attention_mask=batch["attention"])

    def timed(fn) -> float:
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        return time.perf_counter() - t

    if args.breakdown:
        forward_only(grad_batches[:1])  # its warm-up
    rates: list[float] = []
    t_grad, t_ft, t_fwd = [], [], []
    for _ in range(args.repeat):  # GEMM, pass, GEMM, pass, ...: the noise of a shared machine hits both
        rates.append(gemm_rate(args.gemm, device))
        t_grad.append(timed(lambda: grad_pass(enc, args.batch)))
        rates.append(gemm_rate(args.gemm, device))
        t_ft.append(timed(lambda: ft_pass(enc, train_cfg)))
        if args.breakdown:
            rates.append(gemm_rate(args.gemm, device))
            t_fwd.append(timed(forward_only))
    rate = max(rates)
    lines.append(f"  matmul rate ({args.gemm}^3 float32 torch.mm, best of 3, {len(rates)} measurements): best "
                 f"{rate:.1f} GFLOP/s, worst {min(rates):.1f} GFLOP/s")

    rows = []
    for label, batches, secs in (("gradients", grad_batches, min(t_grad)), ("fine-tune 1 epoch", ft_batches,
                                                                              min(t_ft))):
        padded, real = pass_work(shape, batches, True), pass_work(shape, batches, False)
        rows.append({"model": name, "pass": label, "samples": len(enc),
                     "real_tokens": sum(len(e.input_ids) for b in batches for e in b),
                     "padded_tokens": sum(len(b) * max(len(e.input_ids) for e in b) for b in batches),
                     "padded": padded, "real": real, "seconds": secs, "rate": rate})
    if args.breakdown:
        fwd = pass_work(shape, grad_batches, True)
        f_fwd = fwd["fwd linear"] + fwd["fwd attention"]
        f_all = sum(fwd.values())
        sec_fwd, sec_all = min(t_fwd), min(t_grad)
        lines.append("  where the gradient pass's time goes (padded FLOPs; rest = pass - forward):")
        for part, f, s in (("decoder forward, no grad", f_fwd, sec_fwd),
                           ("rest: graph, head, backward, einsum, copies", f_all - f_fwd, sec_all - sec_fwd)):
            rate_s = f"{f / s / 1e9:.1f} GFLOP/s = {100 * f / s / 1e9 / rate:.0f}%" if s > 0 else "n/a"
            lines.append(f"    {part:<46}{f / 1e9:>9.2f} GFLOP {s:>8.2f} s   {rate_s}")
    return rows, lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", nargs="+", default=list(MODELS), help="tiny, smollm2-135m or a local model folder")
    ap.add_argument("--n", type=int, default=64, help="training samples")
    ap.add_argument("--batch", type=int, default=32, help="gradient pass batch size")
    ap.add_argument("--ft-batch", type=int, default=0, help="fine-tuning batch size (0: the quick preset's)")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs of each pass, alternating with the GEMM")
    ap.add_argument("--gemm", type=int, default=2048, help="GEMM side for the machine's matmul rate")
    ap.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                    help="compare the count with FlopCounterMode on the first batch of each pass")
    ap.add_argument("--breakdown", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the decoder forward alone on the gradient pass's batches")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for the GEMM and the passes (0: torch's)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ["HF_HUB_OFFLINE"] = "1"
    warnings.filterwarnings("ignore")
    from engine.model.base import resolve_device

    device = resolve_device(args.device)
    rows = []
    for name in args.model:
        got, lines = run_model(name, args, device)
        rows += got
        print("\n".join(lines), flush=True)

    print("\n| model | pass | samples | tokens real / padded | GFLOP counted (padded) | GFLOP useful (real) | pad x "
          "| seconds | GFLOP/s | % of matmul rate | useful % |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        fp, fr = sum(r["padded"].values()), sum(r["real"].values())
        gps = fp / r["seconds"] / 1e9
        print(f"| {r['model']} | {r['pass']} | {r['samples']} | {r['real_tokens']} / {r['padded_tokens']} "
              f"| {fp / 1e9:.2f} | {fr / 1e9:.2f} | {fp / fr:.3f} | {r['seconds']:.2f} | {gps:.1f} "
              f"| {100 * gps / r['rate']:.0f}% | {100 * fr / r['seconds'] / 1e9 / r['rate']:.0f}% |")
    print("\ncounted GFLOP by part (padded):")
    print("| model | pass | " + " | ".join(PARTS) + " |")
    print("|---|---|" + "---|" * len(PARTS))
    for r in rows:
        print(f"| {r['model']} | {r['pass']} | " + " | ".join(f"{r['padded'][k] / 1e9:.3f}" for k in PARTS) + " |")


if __name__ == "__main__":
    main()
