"""The numerical self-checks: figures equal to a reference computed here, a padding fault is caught, the float32
round trip leaves a bfloat16 model bit for bit as it was, and a run stores the checks (or skips them when off)."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from _models import tiny_lora
from _references import loop_gradients
from scipy.stats import spearmanr

import engine.features.grads
from engine.data.encoding import IGNORE, encode
from engine.data.tasks.base import Sample
from engine.evaluation import checks
from engine.features.grads import sample_features

TPL = "[INST] {prompt} [/INST] {response}"
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(dtype=torch.float32):
    return tiny_lora(r=2, alpha=4, b_std=0.2, seed=0, dtype=dtype)


@pytest.fixture(scope="module")
def data(one_torch_thread):
    model, tok = _model()
    rows = [Sample(f"what is {i} plus {i}" + " please" * (i % 4), " ".join(["the answer is", str(2 * i)] * (1 + i % 3)),
                   "x") for i in range(8)]
    train = [encode(s, tok, TPL, 128, "response") for s in rows[:6]]
    test = [encode(s, tok, TPL, 128, "response") for s in rows[6:]]
    return model, tok, train, test


def _flat(rows, i):
    return np.concatenate([r[i].numpy().astype(np.float64) for r in rows])


def test_padding_figures_equal_a_backward_loop(data):
    model, tok, train, _ = data
    rows = checks.padding_rows(model, train, tok.pad_token_id, CPU, 1, k=3, dtype="float32")
    ids = checks.spread_ids([len(s.input_ids) for s in train], 3)
    lengths = sorted(len(s.input_ids) for s in train)
    assert len({len(train[i].input_ids) for i in ids}) > 1 and len(train[ids[0]].input_ids) == lengths[0]
    batched = sample_features(model, [train[i] for i in ids], tok.pad_token_id, CPU, batch_size=3, progress=False)
    _, ref = loop_gradients(model, [train[i] for i in ids], CPU)  # .backward(), one sample at a time
    for r, i in enumerate(ids):
        a, b = _flat(batched.grads, r), _flat(ref, r)
        cos = {x.metric: x for x in rows if x.subject == f"train {i}"}
        assert cos["cosine"].value == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), abs=1e-6)
        assert cos["max_rel_diff"].value == pytest.approx(np.abs(a - b).max() / np.abs(b).max(), abs=1e-5)
        assert cos["cosine"].passed and cos["max_rel_diff"].passed
    assert any("padded to" in x.note for x in rows)


def _left_padded_without_mask(batch, pad_id):
    """A broken collate: pads on the left and lets attention see them (what the check must catch)."""
    T = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), T), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), T), IGNORE, dtype=torch.long)
    for b, e in enumerate(batch):
        n = len(e.input_ids)
        ids[b, T - n:] = torch.tensor(e.input_ids)
        labels[b, T - n:] = torch.tensor(e.labels)
    ones = torch.ones_like(ids)  # ``attention`` is what the model's forward takes (engine.data.encoding.collate)
    return {"input_ids": ids, "attention_mask": ones, "attention": ones, "labels": labels,
            "prompt_len": torch.tensor([T - len(e.input_ids) + e.prompt_len for e in batch])}


def test_a_padding_fault_fails_the_check(data, monkeypatch):
    model, tok, train, _ = data
    monkeypatch.setattr(engine.features.grads, "collate", _left_padded_without_mask)
    rows = checks.padding_rows(model, train, tok.pad_token_id, CPU, 1, k=3, dtype="float32")
    padded = [x for x in rows if "padded to" in x.note]
    assert padded and not all(x.passed for x in padded)


def test_bf16_rows_against_a_float32_copy_and_the_round_trip_is_exact(data):
    _, _, train, test = data
    model, tok = _model(torch.bfloat16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    rows = checks.bf16_rows(model, train, test, tok.pad_token_id, CPU, 1, n_rows=2, n_cols=6, batch_size=4)
    after = model.state_dict()
    assert all(after[k].dtype == dtypes[k] and torch.equal(after[k], before[k]) for k in before)
    cols = np.linspace(0, len(train) - 1, 6).round().astype(int).tolist()
    copy32 = _model(torch.bfloat16)[0].float()  # the same seeded weights, rounded to bfloat16, in float32
    tr = sample_features(copy32, [train[i] for i in cols], tok.pad_token_id, CPU, 4, progress=False)
    te = sample_features(copy32, test[:2], tok.pad_token_id, CPU, 4, progress=False)
    tr16 = sample_features(model, [train[i] for i in cols], tok.pad_token_id, CPU, 4, progress=False)
    te16 = sample_features(model, test[:2], tok.pad_token_id, CPU, 4, progress=False)
    for j in range(2):
        s32 = [sum(float(v[j].double() @ g[i].double()) for v, g in zip(te.grads, tr.grads)) for i in range(6)]
        s16 = [sum(float(v[j].double() @ g[i].double()) for v, g in zip(te16.grads, tr16.grads)) for i in range(6)]
        got = next(x for x in rows if x.subject == f"gradsim test {j}")
        assert got.value == pytest.approx(spearmanr(s16, s32).statistic, abs=1e-9)
    assert {x.subject.split()[0] for x in rows} == {"gradsim", "repsim"}


def test_finite_share_and_pass_rules():
    S = np.ones((3, 4))
    S[0, 1], S[2, 3] = np.nan, np.inf
    rows = checks.finite_rows({"b": S, "a": np.zeros((2, 2))}, 2)
    assert [r.subject for r in rows] == ["a", "b"]
    assert rows[0].value == 1.0 and rows[0].passed
    assert rows[1].value == pytest.approx(10 / 12) and not rows[1].passed and "2 of 12" in rows[1].note
    assert not checks.CheckRow("x", "y", 1, "m", float("nan"), ">=", 0.5).passed
    assert checks.CheckRow("x", "y", 1, "m", 0.2, "<=", 0.5).passed


def test_spread_ids_cover_short_and_long():
    assert checks.spread_ids([5, 9, 1, 7, 3], 3) == [2, 0, 1]  # shortest, median, longest
    assert checks.spread_ids([4, 4], 5) == [0, 1]


def test_the_run_stores_checks_and_self_influence(tiny_run):
    import json

    rows = pq.read_table(tiny_run / "checks.parquet").to_pandas()
    assert set(rows.kind) == {"padding", "finite"} and rows.passed.all()
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    assert manifest["checks_failed"] == 0 and manifest["feature_plan"]["self_influence"]
    si = pq.read_table(tiny_run / "self_influence.parquet").to_pandas()
    assert "gradsim" in set(si.method) and "repsim" not in set(si.method) and set(si.checkpoint) == {2}
    assert len(si[si.method == "gradsim"]) == manifest["n_train"] and (si[si.method == "gradsim"].score > 0).all()


def test_finite_rows_holds_one_score_matrix_at_a_time():
    """A run's matrices are read from its score files one at a time (engine.evaluation.tables.ScoreMatrices): the check
    must not hold them all at once (16 methods x 100 prompts x 100k samples would be 640 MB)."""
    import weakref

    from engine.evaluation.checks import finite_rows

    live, most = set(), [0]

    class Lazy:  # the mapping protocol ScoreMatrices offers, each matrix made on access
        names = ["b", "a", "c"]

        def __iter__(self):
            return iter(self.names)

        def __getitem__(self, name):
            S = np.ones((3, 4)) if name != "c" else np.full((3, 4), np.nan)
            live.add(id(S))
            weakref.finalize(S, live.discard, id(S))
            most[0] = max(most[0], len(live))
            return S

        def items(self):
            return ((n, self[n]) for n in self.names)

    rows = finite_rows(Lazy(), 1)
    assert [(r.subject, r.value) for r in rows] == [("a", 1.0), ("b", 1.0), ("c", 0.0)]
    assert most[0] == 1
