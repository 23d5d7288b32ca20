"""The race: our DataInf / EK-FAC / GradSim against the libraries a user would pick instead, timed in one run.

    /work/peers-venv/bin/python -m bench.peers.race [--model tiny|smollm2-135m] [--train-per-label 5]
        [--test-per-label 1] [--repeat 3] [--only datainf,ekfac,gradsim,graddot_llm,ekfac_llm] [--batch 8]
        [--dattri-batch B]

Needs the peers venv (bench/peers/requirements.txt has the recipe); the app's own venv lacks the libraries and
the script then says which import failed. Every pair runs on the same model, data and LoRA adapter:

- model: ``engine.model.base.load_base`` (the tiny random Llama or SmolLM2-135M from data/cache), eager attention
  (dattri's ``vmap`` cannot trace SDPA's mask check); LoRA from the ``quick`` preset (q_proj/v_proj, r=4) with a
  seeded adapter whose B is non-zero, so every block carries gradient; eval mode, float32.
- data: the built-in grammars task, the quick preset's template, loss on the response (our default).
- loss: every side uses each sample's mean next-token cross-entropy over its loss tokens (padding masked), as
  ``engine.features.grads``; the peers sum it over the batch (Kronfluence wants a summed loss).

Pairs (each side's time covers everything from the adapter to the score matrix, per-sample gradients included:
the peers compute their own):
- ``datainf``: ours (``engine.features.grads.sample_features`` + our DataInf kernel) vs dattri 0.3.0
  ``IFAttributorDataInf``. dattri takes ONE regularisation for all layers, so both sides use the same absolute
  damping lambda = mean over all LoRA gradient entries g^2 / 10 (our registered ``datainf`` uses a per-block
  lambda_l; here the kernel gets lambda_c chosen per block so that lambda_l = lambda). dattri runs under
  ``torch.no_grad()`` (its ``torch.func.grad`` still differentiates), else it keeps every gradient's graph.
- ``ekfac``: ours (``sample_features(kfac=True)`` + the registered ``ekfac``) vs Kronfluence 1.0.1
  ``strategy="ekfac"``, ``use_empirical_fisher=True`` and ``damping_factor=None`` (0.1 × the mean corrected
  eigenvalue per module = our lambda_l at lambda_c = 10), attention mask for the token statistics.
- ``gradsim``: ours (``sample_features`` + ``gradsim``) vs Bergson 2.5.1 (``bergson build`` of a query index on
  the test set, then ``bergson score`` of the training set against it; pre-tokenised JSONL with our labels,
  ``--loss_reduction mean``, no projection, no preconditioner, float32), run as the CLI because that is
  Bergson's interface; its time includes two process start-ups, measured and printed separately.
- ``graddot_llm``: ours (``sample_features`` + ``gradsim`` with ``dtype="float32"``: the plain dot product of the
  per-sample LoRA gradients, = ``tracin`` at one checkpoint with learning rate 1) vs dattri-llm 0.1.0
  ``TracInAttributor.attribute(train, test, normalized_grad=False)``: its live workflow (frozen probe at the
  adapter, ``AttributionTask`` whose loss calls the model; default ``HookManagerConfig``, i.e. ``linear_io`` hooks
  on every trainable Linear = the LoRA A/B matrices, factorised capture, no projection; float32;
  ``gradient_cache_residency=None``: train gradients stream into the scoring loop, the test side is held once).
  Its kernel picks per layer between the "ghost" contraction of the factors and materialise-then-GEMM by flop
  count; for r=4 LoRA the dense gradient (576 × 4) is smaller than the factors (T × 580), so it materialises.
- ``ekfac_llm``: ours (as ``ekfac`` above) vs dattri-llm 0.1.0 ``EKFACAttributor.attribute(...,
  damping=0.1, relative_damping=True, gradient_cache_residency="memory")``: empirical Fisher (its only kind),
  eigenbases of its K-FAC covariances, corrected eigenvalues Lambda = mean_i (U_G^T G_i U_A)^2 as ours, damping
  0.1 × the mean corrected eigenvalue per layer = our lambda_l at lambda_c = 10. ``"memory"`` collects each side
  once into an in-RAM store (covariances summed during that pass) and re-reads it for the eigenvalue and scoring
  passes; the default ``None`` re-runs the model for each of its three passes (twice as slow here, same scores).
  NOT the same quantity, and it cannot be configured to be: dattri-llm builds the activation covariance A from
  the token rows whose output gradient is not exactly zero (``ops.kronecker._drop_gradient_free_rows``, applied
  unconditionally to sequence layers), ours and Kronfluence from every real (attention-mask) token. Beyond the
  padding, which both drop, that removes each sample's last token (its prediction has no label and nothing
  attends to it) and, for q_proj blocks, the first token (a lone key makes attention independent of q): 1-2 of
  ~60 tokens per sample, so a slightly different eigenbasis of A. Handing it our A and G through
  ``EKFACAttributor.fit(covariances=...)`` gives Spearman 1.0 (max|Δ| 1e-6) on the tiny model, so that is the
  whole difference; on its own factors Spearman is mean ≈ 0.995, min ≈ 0.988 (tiny, 50 train; SmolLM2, 10 train).
  Its eigendecompositions are float32 (ours float64). The in-RAM store holds the factors, T × (in + out) floats
  per LoRA block and sample (≈ 8 MB per SmolLM2 sample at T = 60).

Each side runs ``--repeat`` times, alternating; the table shows median seconds, the ratio peer/ours, and the
Spearman correlation of the two score matrices per test sample (mean and min). A pair that cannot run prints
why. Nothing is downloaded (HF offline); Kronfluence/Bergson/dattri-llm write their files under a temporary folder.
The goal (the issue's): ours ≥ 3× faster than every peer at rank correlation ≥ 0.99.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # the peers' progress bars

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


# ----------------------------------------------------------------------------------------------- the setting
class Setting:
    """Model with the LoRA adapter, encoded samples and their padded tensors, shared by every pair."""

    def __init__(self, model_name: str, train_per_label: int, test_per_label: int, batch: int):
        from engine.data.encoding import collate, encode
        from engine.data.tasks import build_task
        from engine.model.base import load_base
        from engine.model.finetune import add_lora
        from engine.spec.presets import PRESETS

        spec = PRESETS["quick"]
        model, tok = load_base(model_name)
        model.config._attn_implementation = "eager"
        model = add_lora(model, spec.lora, seed=0)
        with torch.no_grad():  # a trained-looking adapter: B != 0 so every block carries gradient
            g = torch.Generator().manual_seed(0)
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.01)
        model.eval()
        task = build_task("grammars", seed=0, n_train_per_label=train_per_label, n_test_per_label=test_per_label)

        def enc(rows):
            return [encode(s, tok, spec.train.template, spec.train.max_length, spec.train.loss_on) for s in rows]

        self.model, self.tok, self.task, self.batch = model, tok, task, batch
        self.model_name = model_name
        self.train_enc, self.test_enc = enc(task.train), enc(task.test)
        self.pad = tok.pad_token_id
        longest = max(len(e.input_ids) for e in self.train_enc + self.test_enc)
        # The peers' datasets need equal lengths (default collate / TensorDataset): right-pad all to the longest.
        self.train_t = collate(self.train_enc, self.pad)
        self.test_t = collate(self.test_enc, self.pad)
        for t in (self.train_t, self.test_t):
            extra = longest - t["input_ids"].shape[1]
            t["input_ids"] = F.pad(t["input_ids"], (0, extra), value=self.pad)
            t["attention_mask"] = F.pad(t["attention_mask"], (0, extra), value=0)
            t["labels"] = F.pad(t["labels"], (0, extra), value=-100)
        self.n_lora = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)

    def features(self, samples, kfac=False):
        from engine.features.grads import sample_features

        return sample_features(self.model, samples, self.pad, torch.device("cpu"), self.batch, progress=False,
                               kfac=kfac)

    def describe(self) -> str:
        n_tok = int(self.train_t["attention_mask"].sum())
        return (f"model {self.model_name}: {len(self.train_enc)} train × {len(self.test_enc)} test samples "
                f"(grammars), {n_tok} real train tokens, padded length {self.train_t['input_ids'].shape[1]}, "
                f"{self.n_lora:,} LoRA parameters, torch threads {torch.get_num_threads()}")


def mean_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample mean next-token cross-entropy over the loss tokens [B] (= engine.data.encoding.per_sample_loss)."""
    from engine.data.encoding import per_sample_loss

    return per_sample_loss(logits, labels)


# ------------------------------------------------------------------------------------------------ our sides
def ours_datainf(st: Setting, lam: float):
    from engine.features.types import Features
    from engine.scoring.methods._common import run_blocks
    from engine.scoring.methods.datainf import precondition_datainf

    tr, te = st.features(st.train_enc), st.features(st.test_enc)

    def fixed(G, V, **_):  # DataInf with one absolute damping for every block, as dattri's
        lambda_c = float(G.square().mean()) / lam
        return precondition_datainf(G, V, lambda_c=lambda_c) if lambda_c > 0 else torch.zeros_like(V)

    return run_blocks(Features(grads=tr.grads), Features(grads=te.grads), fixed)


def ours_method(st: Setting, name: str, **params):
    from engine.features.types import Features
    from engine.scoring.methods import get_method

    m = get_method(name)
    tr = st.features(st.train_enc, kfac="kfac" in m.needs)
    te = st.features(st.test_enc)
    return m(Features(grads=tr.grads, kfac=tr.kfac), Features(grads=te.grads), **params)


def global_damping(st: Setting, lambda_c: float = 10.0) -> float:
    tr = st.features(st.train_enc)
    total = sum(float(g.double().square().sum()) for g in tr.grads)
    return total / (tr.grads[0].shape[0] * sum(g.shape[1] for g in tr.grads) * lambda_c)


# ----------------------------------------------------------------------------------------------- the peers
class _DictData(torch.utils.data.Dataset):
    """The padded tensors as a map-style dataset of dicts (the default collate stacks them into a dict batch)."""

    def __init__(self, t):
        self.t = {k: t[k] for k in ("input_ids", "attention_mask", "labels")}

    def __len__(self):
        return self.t["input_ids"].shape[0]

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.t.items()}


def dattri_datainf(st: Setting, lam: float, batch: int):
    from dattri.algorithm.influence_function import IFAttributorDataInf
    from dattri.task import AttributionTask
    from torch.utils.data import DataLoader, TensorDataset

    model = st.model

    def loss_func(params, data):  # one sample under vmap: (1, T) tensors
        ids, mask, labels = data
        logits = torch.func.functional_call(model, params, (ids,), {"attention_mask": mask}).logits
        return mean_token_loss(logits, labels).sum()

    def ds(t):
        return TensorDataset(t["input_ids"], t["attention_mask"], t["labels"])

    task = AttributionTask(loss_func=loss_func, model=model, checkpoints=model.state_dict())
    att = IFAttributorDataInf(task=task, device="cpu", regularization=lam)
    # torch.func.grad still differentiates under an outer no_grad, but its results then carry no autograd graph:
    # without it dattri 0.3.0 keeps every cached gradient's graph (its scores come back with requires_grad), so
    # memory grows with each sample (past 24 GB on SmolLM2 at 30 samples, killed).
    with torch.no_grad():
        att.cache(DataLoader(ds(st.train_t), batch_size=batch))
        S = att.attribute(DataLoader(ds(st.train_t), batch_size=batch), DataLoader(ds(st.test_t), batch_size=batch))
    return S.detach().T.double().numpy()  # dattri: [n_train, n_test]


class _KronfluenceSide:
    """Kronfluence on its own copy of the model (``prepare_model`` swaps the LoRA Linears for wrappers)."""

    def __init__(self, st: Setting, out: Path):
        from kronfluence.analyzer import Analyzer, prepare_model
        from kronfluence.task import Task

        model = copy.deepcopy(st.model)
        tracked = [n for n, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear) and (".lora_A." in n or ".lora_B." in n)]

        class LMTask(Task):
            # keyword names batch/model/sample: Kronfluence calls these by keyword
            def compute_train_loss(self, batch, model, sample=False):
                if sample:
                    raise RuntimeError("the race uses the empirical Fisher")
                out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                return mean_token_loss(out.logits, batch["labels"]).sum()

            def compute_measurement(self, batch, model):
                return self.compute_train_loss(batch, model)

            def get_influence_tracked_modules(self):
                return tracked

            def get_attention_mask(self, batch):
                return batch["attention_mask"]

        self.task = LMTask()
        self.model = prepare_model(model, self.task)
        self.analyzer = Analyzer(analysis_name="race", model=self.model, task=self.task, cpu=True,
                                 disable_tqdm=True, output_dir=str(out))
        self.train, self.test = _DictData(st.train_t), _DictData(st.test_t)
        self.batch = st.batch

    def __call__(self):
        from kronfluence.arguments import FactorArguments, ScoreArguments

        self.analyzer.fit_all_factors(
            factors_name="ekfac", dataset=self.train, per_device_batch_size=self.batch,
            factor_args=FactorArguments(strategy="ekfac", use_empirical_fisher=True), overwrite_output_dir=True)
        self.analyzer.compute_pairwise_scores(
            scores_name="s", factors_name="ekfac", query_dataset=self.test, train_dataset=self.train,
            per_device_query_batch_size=self.batch, per_device_train_batch_size=self.batch,
            score_args=ScoreArguments(damping_factor=None), overwrite_output_dir=True)
        return self.analyzer.load_pairwise_scores("s")["all_modules"].double().numpy()


class _BergsonSide:
    """Bergson's CLI on a saved copy of the base model + adapter and JSONL data (text = the formatted sample)."""

    def __init__(self, st: Setting, out: Path):
        import bergson  # noqa: F401  (fails here, with the reason, if it cannot be imported)

        self.out = out
        base, adapter = out / "base", out / "adapter"
        peft_copy = copy.deepcopy(st.model)
        peft_copy.peft_config["default"].base_model_name_or_path = str(base)
        peft_copy.save_pretrained(adapter)  # the adapter weights only
        st.tok.save_pretrained(adapter)
        peft_copy.unload().save_pretrained(base)  # the base model without the LoRA layers
        st.tok.save_pretrained(base)
        self.adapter = adapter
        self.max_len = st.train_t["input_ids"].shape[1]
        for name, samples in (("train", st.train_enc), ("test", st.test_enc)):
            with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
                for e in samples:
                    f.write(json.dumps({"input_ids": list(e.input_ids), "labels": list(e.labels)}) + "\n")
        self.n_test = len(st.test_enc)

    def __call__(self):
        run = self.out / "run"
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir()
        common = ["--model", str(self.adapter), "--projection_dim", "0", "--loss_reduction", "mean",
                  "--token_batch_size", str(self.max_len * 8)]
        self._cli("build", str(run / "query"), "--dataset", str(self.out / "test.jsonl"), "--precision", "fp32",
                  *common)
        self._cli("score", str(run / "scores"), "--query_path", str(run / "query"), "--score", "individual",
                  "--dataset", str(self.out / "train.jsonl"), "--index_cfg.precision", "fp32", *common)
        from bergson.data import load_scores

        sc = load_scores(run / "scores")  # structured rows: score_k (float32), written_k per query column k
        arr = np.asarray(sc.mmap[:])
        if not all(arr[f"written_{k}"].all() for k in range(self.n_test)):
            raise RuntimeError("bergson left score cells unwritten")
        return np.stack([arr[f"score_{k}"] for k in range(self.n_test)]).astype(np.float64)

    @staticmethod
    def _cli(*args):
        r = subprocess.run([sys.executable, "-m", "bergson", *args], capture_output=True, text=True)
        if r.returncode:
            tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-3:])
            raise RuntimeError(f"bergson {args[0]} exited with {r.returncode}: {tail}")


class _DattriLLMSide:
    """dattri-llm's live workflow on its own copy of the model: ``TracInAttributor`` (``method="tracin"``) or
    ``EKFACAttributor`` (``method="ekfac"``), settings in the module docstring.

    Its ``AttributionTask`` loss calls the model on a batch; forward/backward hooks on the LoRA Linears keep each
    one's input and output gradient (the factorised per-sample gradient), so the loss must be the SUM of the
    per-sample mean token losses (each sample's factors then carry its own loss's gradient). A frozen probe
    streams the datasets in order, so the score rows/columns come back in dataset order (keyed by content hash).
    """

    def __init__(self, st: Setting, out: Path, method: str):
        from dattri_llm import AttributionArguments, AttributionTask

        def loss_func(model, batch):  # (model, batch) -> scalar, on the live model
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            return mean_token_loss(out.logits, batch["labels"]).sum()

        self.task = AttributionTask(loss_func, copy.deepcopy(st.model))
        # max_grad_norm only clips a trajectory's optimizer step (a frozen probe never clips); None says so.
        # pin_memory off: there is no GPU (it would switch it off itself, with a log line).
        self.args = AttributionArguments(output_dir=str(out), per_device_train_batch_size=st.batch,
                                         per_device_eval_batch_size=st.batch, use_cpu=True, max_grad_norm=None,
                                         dataloader_pin_memory=False)
        self.train, self.test = _DictData(st.train_t), _DictData(st.test_t)
        self.shape = (len(st.train_enc), len(st.test_enc))
        self.method = method

    def __call__(self):
        from dattri_llm import EKFACAttributor, TracInAttributor

        if self.method == "tracin":
            sc = TracInAttributor(self.args, task=self.task).attribute(self.train, self.test, normalized_grad=False)
        else:
            sc = EKFACAttributor(self.args, task=self.task).attribute(
                self.train, self.test, damping=0.1, relative_damping=True, gradient_cache_residency="memory")
        if tuple(sc.scores.shape) != self.shape:
            raise RuntimeError(f"dattri-llm returned scores {tuple(sc.scores.shape)}, expected {self.shape}")
        return sc.scores.T.double().numpy()  # dattri-llm: [n_train, n_test]


# --------------------------------------------------------------------------------------------- the harness
def spearman_rows(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    from scipy.stats import spearmanr

    rho = [spearmanr(a[j], b[j])[0] for j in range(a.shape[0])]
    return float(np.mean(rho)), float(np.min(rho))


def race(label, ours, peer, repeat):
    """Alternate ours/peer ``repeat`` times; return a result row (median times, ratio, correlation)."""
    t_ours, t_peer, S_ours, S_peer = [], [], None, None
    for _ in range(repeat):
        t = time.perf_counter()
        S_ours = ours()
        t_ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        S_peer = peer()
        t_peer.append(time.perf_counter() - t)
    mo, mp = statistics.median(t_ours), statistics.median(t_peer)
    mean_rho, min_rho = spearman_rows(S_ours, S_peer)
    rel = float(np.abs(S_ours - S_peer).max() / np.abs(S_peer).max())
    return {"pair": label, "ours_s": mo, "peer_s": mp, "ratio": mp / mo, "rho_mean": mean_rho, "rho_min": min_rho,
            "rel_diff": rel, "times_ours": t_ours, "times_peer": t_peer}


def print_row(r):
    print(f"{r['pair']:<34} {r['ours_s']:>8.2f} {r['peer_s']:>8.2f} {r['ratio']:>7.2f}× "
          f"{r['rho_mean']:>9.4f} {r['rho_min']:>9.4f} {r['rel_diff']:>9.1e}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny", help="tiny | smollm2-135m")
    ap.add_argument("--train-per-label", type=int, default=5)
    ap.add_argument("--test-per-label", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dattri-batch", type=int, default=0,
                    help="dattri's batch size (default: --batch)")
    ap.add_argument("--only", default="datainf,ekfac,gradsim,graddot_llm,ekfac_llm")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    only = set(args.only.split(","))

    st = Setting(args.model, args.train_per_label, args.test_per_label, args.batch)
    print(st.describe())
    print(f"{'pair (ours vs peer)':<34} {'ours s':>8} {'peer s':>8} {'ratio':>8} {'rho mean':>9} {'rho min':>9} "
          f"{'max|Δ|':>9}")
    tmp = Path(tempfile.mkdtemp(prefix="race-"))
    rows, failures = [], []

    def attempt(label, build):
        try:
            ours, peer = build()
            r = race(label, ours, peer, args.repeat)
            rows.append(r)
            print_row(r)
        except Exception as e:  # a peer that cannot run: say exactly why, keep racing the others
            msg = f"{label}: cannot run: {type(e).__name__}: {e}".strip()
            failures.append(msg)
            print(msg, flush=True)
            if os.environ.get("RACE_TRACEBACK"):
                traceback.print_exc()

    try:
        if "datainf" in only:
            def datainf_pair():
                lam = global_damping(st)
                return (lambda: ours_datainf(st, lam)), (lambda: dattri_datainf(st, lam, args.dattri_batch or st.batch))
            attempt("DataInf vs dattri 0.3.0", datainf_pair)
        if "ekfac" in only:
            def ekfac_pair():
                side = _KronfluenceSide(st, tmp / "kronfluence")
                return (lambda: ours_method(st, "ekfac")), side
            attempt("EK-FAC vs Kronfluence 1.0.1", ekfac_pair)
        if "gradsim" in only:
            def gradsim_pair():
                side = _BergsonSide(st, tmp / "bergson")
                return (lambda: ours_method(st, "gradsim")), side
            attempt("GradSim vs Bergson 2.5.1 (CLI)", gradsim_pair)
            if rows and rows[-1]["pair"].startswith("GradSim"):
                starts = []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    subprocess.run([sys.executable, "-c", "import bergson.cli.commands"], check=True)
                    starts.append(time.perf_counter() - t)
                start = statistics.median(starts)
                rest = rows[-1]["peer_s"] - 2 * start
                print(f"  Bergson's time includes 2 CLI processes; one start-up (interpreter + imports) takes "
                      f"{start:.1f} s (median); without them Bergson would take ≈ {max(rest, 0):.1f} s, "
                      f"≈ {max(rest, 0) / rows[-1]['ours_s']:.1f}× ours", flush=True)
        if "graddot_llm" in only:
            def graddot_llm_pair():
                side = _DattriLLMSide(st, tmp / "dattri-llm-tracin", "tracin")
                return (lambda: ours_method(st, "gradsim", dtype="float32")), side
            attempt("GradDot vs dattri-llm 0.1.0", graddot_llm_pair)
        if "ekfac_llm" in only:
            def ekfac_llm_pair():
                side = _DattriLLMSide(st, tmp / "dattri-llm-ekfac", "ekfac")
                return (lambda: ours_method(st, "ekfac")), side
            attempt("EK-FAC vs dattri-llm 0.1.0", ekfac_llm_pair)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("ratio = peer time / our time (medians of the repeats; > 1: ours is faster); rho = Spearman of the two "
          "score rows per test sample; max|Δ| = max |S_ours - S_peer| / max |S_peer|")
    for r in rows:
        ok = r["ratio"] >= 3 and r["rho_min"] >= 0.99
        print(f"goal (≥ 3× at rank correlation ≥ 0.99) {'met' if ok else 'NOT met'}: {r['pair']}")
    print(json.dumps({"setting": st.describe(), "rows": rows, "failures": failures}))


if __name__ == "__main__":
    main()
