"""Attributing a foreign adapter: one fine-tuned with ``transformers.Trainer`` + peft in a fixture (targets k/o/up,
rsLoRA, three ``checkpoint-*`` folders), attributed by ``python -m engine attribute`` without any fine-tuning.

The references are written here from the formulas, on a PeftModel loaded with peft's own ``from_pretrained``:
per-sample gradients by ``.backward()`` one sample at a time, GradSim as their dot products, the exact iHVP with
an explicit inverse per LoRA matrix, and TracIn from the learning rates in Trainer's ``trainer_state.json``.
"""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from engine.cli import main
from engine.runfolder.runformat import read_manifest

pytestmark = pytest.mark.slow

RUN = "foreign-run"
METHODS = "gradsim,exact,tracin,datainf,repsim"


@pytest.fixture(scope="module")
def attributed(foreign_adapter, tmp_path_factory):
    base, out, dataset = foreign_adapter
    store = tmp_path_factory.mktemp("attr") / "s.duckdb"
    code = main(["attribute", "--model", str(base), "--adapter", str(out), "--checkpoints", str(out),
                 "--dataset", str(dataset), "--methods", METHODS, "--name", RUN, "--score-checkpoints", "all",
                 "--store", str(store), "--quiet", "--no-ingest"])
    assert code == 0
    return store.parent / "runs" / RUN


def _scores(folder, method, ckpt):
    t = pq.read_table(folder / "scores", filters=[("method", "=", method), ("checkpoint", "=", ckpt)]).to_pandas()
    S = np.full((t.test_id.max() + 1, t.train_id.max() + 1), np.nan)
    S[t.test_id, t.train_id] = t.score
    return S


def test_the_run_uses_every_trainer_checkpoint(attributed, foreign_adapter):
    _, out, _ = foreign_adapter
    m = read_manifest(attributed)
    assert m["adapter"] == str(out) and m["methods"] == METHODS.split(",")
    # checkpoint-5/10/15; the final save equals checkpoint-15 and is not counted twice
    assert [c["step"] for c in m["checkpoint_info"]] == [5, 10, 15]
    assert m["checkpoints"] == [1, 2, 3]
    assert pq.read_table(attributed / "train_loss.parquet").num_rows == 0  # nothing was fine-tuned
    assert m["feature_plan"]["history"] and not m["feature_plan"]["kfac"]


def _reference_grads(base, out, dataset, checkpoint_dir=None):
    """Per-sample LoRA gradients of the response loss, one .backward() per sample, on peft's own loading.

    Encoding (the engine's documented one, rebuilt here): the prompt part of the template and the response part
    (with its leading space) + EOS are tokenised separately; the loss is the mean cross-entropy over the
    response tokens and EOS.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), checkpoint_dir or out)
    model.eval()
    rows = [json.loads(line) for line in dataset.read_text().splitlines()]
    names = [n for n, p in model.named_parameters() if "lora_" in n]
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)

    def grads(row):
        p_ids = tok(f"[INST] {row['prompt']} [/INST]")["input_ids"]
        r_ids = tok(" " + row["response"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = torch.tensor([p_ids + r_ids])
        logits = model(input_ids=ids).logits[0, :-1]
        target = ids[0, 1:]
        loss = torch.nn.functional.cross_entropy(logits[len(p_ids) - 1:], target[len(p_ids) - 1:])
        model.zero_grad()
        loss.backward()
        return {n: p.grad.detach().double().flatten().clone() for n, p in model.named_parameters() if n in names}

    train = [grads(r) for r in rows if r["split"] == "train"]
    test = [grads(r) for r in rows if r["split"] == "test"]
    stack = lambda gs: {n: torch.stack([g[n] for g in gs]) for n in names}  # noqa: E731
    return stack(train), stack(test)


@pytest.fixture(scope="module")
def reference(foreign_adapter):
    return _reference_grads(*foreign_adapter)


def test_gradsim_equals_autograd_dot_products(attributed, reference):
    G, V = reference
    want = sum(V[n] @ G[n].T for n in G).numpy()
    got = _scores(attributed, "gradsim", 3)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_exact_equals_an_explicit_inverse_per_lora_matrix(attributed, reference):
    G, V = reference
    want = 0
    for n in G:  # one block per LoRA matrix; damping lambda_l = mean(g^2) / 10
        g, v = G[n], V[n]
        lam = g.square().mean() / 10.0
        H = g.T @ g / g.shape[0] + lam * torch.eye(g.shape[1], dtype=torch.float64)
        want = want + (v @ torch.linalg.inv(H)) @ g.T
    want = want.numpy()
    got = _scores(attributed, "exact", 3)
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-4 * np.abs(want).max())


def test_tracin_sums_the_trainer_checkpoints_with_their_learning_rates(attributed, foreign_adapter):
    _, out, _ = foreign_adapter
    log = json.loads((out / "checkpoint-15" / "trainer_state.json").read_text())["log_history"]
    lr = {row["step"]: row["learning_rate"] for row in log if "learning_rate" in row}
    eta = [np.mean([lr[s] for s in range(a, b + 1)]) for a, b in ((1, 5), (6, 10), (11, 15))]
    m = read_manifest(attributed)
    np.testing.assert_allclose([c["lr_weight"] for c in m["checkpoint_info"]], eta, rtol=1e-9)
    want = sum(e * _scores(attributed, "gradsim", c) for c, e in zip((1, 2, 3), eta))
    np.testing.assert_allclose(_scores(attributed, "tracin", 3), want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


def test_an_intermediate_checkpoint_is_scored_with_its_own_weights(attributed, foreign_adapter):
    base, out, dataset = foreign_adapter
    G, V = _reference_grads(base, out, dataset, checkpoint_dir=out / "checkpoint-5")
    want = sum(V[n] @ G[n].T for n in G).numpy()
    np.testing.assert_allclose(_scores(attributed, "gradsim", 1), want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_a_users_adapter_run_answers_new_queries_from_its_own_copy_of_the_states(attributed, tmp_path):
    """``engine index`` on an attributed run, then a test prompt asked again: its stored scores, with the adapter
    read from the run folder's copy (the user's folder is not needed once the run exists)."""
    import shutil

    from engine.query.build import build_index
    from engine.query.session import QuerySession

    folder = tmp_path / "runs" / attributed.name
    shutil.copytree(attributed, folder)
    body = build_index(folder, progress=False)
    assert set(body["prompt_methods"]) == set(METHODS.split(","))
    test = pq.read_table(folder / "samples.parquet").to_pandas().query("split == 'test'").sort_values("sample_id")
    a = QuerySession(folder).ask(test.prompt.iloc[1], test.response.iloc[1], methods=["gradsim", "tracin"])
    for m in ("gradsim", "tracin"):
        ref = _scores(attributed, m, 3)[1]
        assert np.max(np.abs(a.scores[m] - ref)) <= 1e-4 * np.max(np.abs(ref)), m
