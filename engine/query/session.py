"""A query session: one run's model, adapter states and query index, loaded once, answering new queries.

Two directions, both with the run's own methods, parameters and features, so the numbers are the run's:

- **prompt** (:meth:`QuerySession.ask`): a new test prompt and its response (given, or the fine-tuned model's
  greedy answer) scored against every training sample: ``S[0, i] = s(z_i, z')`` for i = 0..n_train-1, exactly
  as the run scored its own test prompts (the query's features are computed by the feature stage's code at the
  index's checkpoints, then :func:`engine.scoring.methods.score_in_shards` over the index's training shards);
- **candidate** (:meth:`QuerySession.candidate`): a new training text scored against the run's test prompts:
  ``S[j, 0] = s(z_c, z'_j)``, the column the candidate would have as one more training sample, with the
  preconditioning statistics of the run's training set (the up-weighting question influence functions answer).

Larger score = more responsible, as everywhere. The preconditioned queries of the run's test prompts and every
training-side statistic are kept in memory after their first use (``TrainData.memo``), so a session pays for them
once. Not thread-safe: the server (:mod:`engine.query.server`) answers one query at a time.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.analysis.outputs import greedy_generate
from engine.catalog.methods import QUERY_KINDS, method_info
from engine.data.encoding import Encoded, encode
from engine.data.tasks.base import Sample
from engine.data.tasks.difficulty import sample_text
from engine.errors import InputError
from engine.evaluation.metrics import top_k_rows
from engine.features.cache import FeatureCache, TensorLRU
from engine.features.distributed import Dist
from engine.features.grads import token_gradients
from engine.features.plan import FeaturePlan
from engine.features.stage import CheckpointData, load_checkpoint, method_features, side_features
from engine.features.types import Features
from engine.model.finetune import set_lora_state
from engine.model.states import checkpoint_state, load_model
from engine.pipeline.stages import feature_plan, load_data, pass_settings, reload_spec, run_methods
from engine.runfolder.runformat import INDEX_DIR, index_info, read_manifest
from engine.scoring.methods import get_method, score_in_shards
from engine.scoring.methods._common import dot_queries
from engine.scoring.query_index import restore_stats
from engine.scoring.token_files import no_token_view
from engine.scoring.tokens import token_pieces, token_shares

MAX_TEXT_CHARS = 20_000  # a prompt or response longer than this is refused before tokenising (bounded work)


@dataclass
class Answer:
    """One answered query. kind: "prompt" (``top`` ids are training ids) or "candidate" (test ids); top: method ->
    ``[(id, score), ...]`` best first (the ranking rule of ``engine.evaluation.metrics.ranking``); scores: method ->
    the full float64 score vector (every training sample, or every test prompt); cannot: method -> why it cannot
    answer; notes: what the user should know (truncation); seconds: time per stage."""

    kind: str
    prompt: str
    response: str
    generated: bool
    top: dict[str, list[tuple[int, float]]]
    scores: dict[str, np.ndarray]
    cannot: dict[str, str]
    notes: list[str]
    seconds: dict[str, float] = field(default_factory=dict)

    def rows(self) -> list[dict]:
        """One row per (method, rank): method, rank (1 = best), id (``train_id`` or ``test_id``), score."""
        key = "train_id" if self.kind == "prompt" else "test_id"
        return [{"method": m, "rank": r, key: i, "score": s}
                for m, top in self.top.items() for r, (i, s) in enumerate(top, start=1)]

    def to_dict(self) -> dict:
        """JSON-ready (no score vectors): what the server sends."""
        return {"kind": self.kind, "prompt": self.prompt, "response": self.response, "generated": self.generated,
                "top": {m: [[int(i), float(s)] for i, s in t] for m, t in self.top.items()},
                "cannot": self.cannot, "notes": self.notes, "seconds": self.seconds}


def check_text(value, name: str, *, required: bool) -> str:
    """``value`` as query text: a string of at most MAX_TEXT_CHARS; a blank one is refused when ``required``."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InputError(f"query field {name!r} must be text, got {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        raise InputError(f"query field {name!r} has {len(value):,} characters; at most {MAX_TEXT_CHARS:,}")
    if required and not value.strip():
        raise InputError(f"query field {name!r} is empty: give some text")
    return value


def check_k(k) -> int:
    """``k`` (how many best samples per method) as a positive integer, else an InputError naming the field."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"query field 'k' must be a positive integer, got {k!r}")
    return int(k)


class QuerySession:
    """The run at ``folder`` (a complete run folder with a query index), ready to answer queries.

    memory_mb: index tensors kept in memory after their first read, up to this many MB (None: all of them); a
    larger index is read shard by shard per query, from the OS page cache once it is warm."""

    def __init__(self, folder: Path, progress: bool = False, memory_mb: int | None = None):
        t = time.perf_counter()
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        if self.manifest is None:
            raise InputError(f"{self.folder}: not a complete run folder")
        self.info = index_info(self.folder)
        if self.info is None:
            raise InputError(f"run {self.folder.name!r} has no query index: build one with "
                             f"`python -m engine index --run {self.folder.name}`")
        self.spec = reload_spec(self.folder, self.manifest)
        self.methods = {m.name: m for m in run_methods(self.spec)}
        self.plan = feature_plan(self.spec, list(self.methods.values()))
        self.task = load_data(self.spec)
        self.checkpoints: list[int] = list(self.info["checkpoints"])
        self.states = [checkpoint_state(self.folder, c) for c in self.checkpoints]
        self.lm = load_model(self.spec)
        self.settings = pass_settings(self.spec, self.lm, progress)
        # every method computing in float64 (the default): the index tensors are kept upcast (TensorLRU.dtype)
        upcast = torch.float64 if {getattr(m.params, "dtype", "float64") for m in self.methods.values()} == {"float64"} \
            else None
        self.lru = TensorLRU(1 << 62 if memory_mb is None else memory_mb << 20, dtype=upcast)
        self.data = self._index_data()
        restore_stats(self.folder / INDEX_DIR, self.data[-1].train)
        self.train_texts = tuple(sample_text(s.prompt, s.response) for s in self.task.train)
        self.test_texts = tuple(sample_text(s.prompt, s.response) for s in self.task.test)
        self._test_queries: dict[str, list[torch.Tensor]] = {}
        self.load_seconds = time.perf_counter() - t

    # ---- loading

    def _index_data(self) -> list[CheckpointData]:
        """The index's checkpoints as the scoring stage sees them (training shards and the run's test side)."""
        cache = FeatureCache(self.folder / INDEX_DIR)
        n_train, n_test = self.info["n_train"], self.info["n_test"]
        if (n_train, n_test) != (len(self.task.train), len(self.task.test)):
            raise InputError(f"run {self.folder.name!r}: its data now has {len(self.task.train)} training and "
                             f"{len(self.task.test)} test samples, its index {n_train} and {n_test}: rebuild it")
        last = self.checkpoints[-1]
        return [load_checkpoint(cache, c, self.info["weights"][c - 1], n_train, n_test, self.settings, self.plan,
                                Dist(), self.lru, c == last) for c in self.checkpoints]

    # ---- the query's own features

    def _encode(self, sample: Sample, max_length: int | None = None) -> Encoded:
        """``sample`` encoded as the run encodes its samples (its template, length, loss positions, padding)."""
        tr = self.spec.train
        return encode(sample, self.lm.tok, tr.template, max_length or tr.max_length, tr.loss_on, tr.preprocessing,
                      tr.pad_attention)

    def encode(self, prompt: str, response: str) -> tuple[Encoded, list[str]]:
        """The query encoded as the run encodes its samples; notes say when it was cut to ``train.max_length``."""
        tr = self.spec.train
        enc = self._encode(Sample(prompt, response, ""))
        full = self._encode(Sample(prompt, response, ""), 1 << 20)
        notes = []
        if len(full.input_ids) > len(enc.input_ids):
            notes.append(f"the query has {len(full.input_ids)} tokens and was cut to the run's train.max_length = "
                         f"{tr.max_length}, as the run cuts its own samples")
        return enc, notes

    def generate(self, prompt: str) -> str:
        """The fine-tuned model's greedy answer to ``prompt`` (at the last checkpoint), as text."""
        enc, _ = self.encode(prompt, "")
        set_lora_state(self.lm.model, self.states[-1])
        toks = greedy_generate(self.lm.model, [enc], self.lm.tok.pad_token_id, self.lm.tok.eos_token_id,
                               self.lm.device, self.spec.analysis.generate_tokens, batch_size=1)[0]
        return self.lm.tok.decode(toks, skip_special_tokens=True).strip()

    def _features(self, enc: Encoded, train: bool) -> list:
        """The query's SideFeatures at every index checkpoint (full features at the last, gradients before)."""
        out = []
        for c, state in zip(self.checkpoints, self.states):
            set_lora_state(self.lm.model, state)
            self.lm.model.eval()
            plan = self.plan if c == self.checkpoints[-1] else FeaturePlan(grads=True)
            settings = dataclasses.replace(self.settings, progress=False)
            out.append(side_features(self.lm.model, [enc], settings, plan, train=train, keep_grads=True,
                                     desc="query"))
        return out

    # ---- the two directions

    def ask(self, prompt: str, response: str | None = None, *, generate: bool = False,
            methods: list[str] | None = None, k: int = 10) -> Answer:
        """Score a new test prompt against every training sample; ``generate``: the response is the model's."""
        t0 = time.perf_counter()
        prompt, k = check_text(prompt, "prompt", required=True), check_k(k)
        seconds = {}
        if generate:
            response = self.generate(prompt)
            seconds["generate_s"] = time.perf_counter() - t0
        response = check_text(response, "response", required=False)
        use, cannot = self._pick(methods, "prompt")
        t = time.perf_counter()
        enc, notes = self.encode(prompt, response)
        sides = self._features(enc, train=False)
        seconds["query_features_s"] = time.perf_counter() - t
        history = [dataclasses.replace(d, test=s) for d, s in zip(self.data, sides)]
        now = dataclasses.replace(history[-1], texts=(self.train_texts, (sample_text(prompt, response),)))
        scores = {}
        for name in use:
            t = time.perf_counter()
            m = self.methods[name]
            train_x, test_x = method_features(m.proj_key, now, history if self.plan.history else [])
            blocks = [b for _, _, b in score_in_shards(name, train_x, test_x, p=m.params)]
            scores[name] = np.concatenate(blocks, axis=1)[0]
            seconds[f"score_{name}_s"] = time.perf_counter() - t
        return self._answer("prompt", prompt, response, generate, scores, cannot, notes, k, seconds, t0)

    def candidate(self, prompt: str, response: str, *, methods: list[str] | None = None, k: int = 10) -> Answer:
        """Score a candidate training text against every test prompt of the run."""
        t0 = time.perf_counter()
        prompt, k = check_text(prompt, "prompt", required=True), check_k(k)
        response = check_text(response, "response", required=False)
        use, cannot = self._pick(methods, "candidate")
        t = time.perf_counter()
        enc, notes = self.encode(prompt, response)
        sides = self._features(enc, train=True)
        seconds = {"query_features_s": time.perf_counter() - t}
        last = sides[-1]
        scores = {}
        for name in use:
            t = time.perf_counter()
            m = self.methods[name]
            history = tuple((d.weight, s.grads) for d, s in zip(self.data, sides)) if self.plan.history else ()
            shard = Features(grads=last.grads, reps=last.reps, block_names=last.block_names, rept=last.rept,
                             proj=last.projections.get(m.proj_key) if m.proj_key is not None else None,
                             history=history, size=1)
            Q = self._queries_of_tests(name)
            scores[name] = dot_queries(Q, get_method(name).train_side(shard, m.params))[:, 0]
            seconds[f"score_{name}_s"] = time.perf_counter() - t
        return self._answer("candidate", prompt, response, False, scores, cannot, notes, k, seconds, t0)

    def tokens(self, kind: str, prompt: str, response: str, item: int, *,
               methods: list[str] | None = None) -> dict:
        """The token view of one drilled item of an answer: which tokens carry its score (engine.scoring.tokens).

        kind "prompt": ``item`` is a training sample id; its tokens' shares of its score for the new prompt.
        kind "candidate": ``item`` is a test prompt id; the candidate's tokens' shares of its score for that prompt.
        ``response``: the answer's response (the generated one for a generated answer: not generated again).

        Returns ``{"kind", "item", "pieces" [T], "token_ids" [T], "prompt_len", "loss" [T] (whether the position
        carries loss), "shares": {method: [T]}, "scores": {method: the shares' sum}, "skipped": {method: why}}``;
        a method's shares sum to its score in the answer up to float32 rounding of the per-token rows."""
        t0 = time.perf_counter()
        prompt = check_text(prompt, "prompt", required=True)
        response = check_text(response, "response", required=False)
        use, cannot = self._pick(methods, kind)
        n = len(self.task.train) if kind == "prompt" else len(self.task.test)
        if not isinstance(item, int) or isinstance(item, bool) or not 0 <= item < n:
            side = "training sample" if kind == "prompt" else "test prompt"
            raise InputError(f"field 'item' must be a {side} id in 0..{n - 1}, got {item!r}")
        splitting = [m for m in use if method_info(m).tokens]
        skipped = {**cannot, **{m: no_token_view(m) for m in use if not method_info(m).tokens}}
        query, _ = self.encode(prompt, response)
        split = self._encode(self.task.train[item]) if kind == "prompt" else query  # the sample whose tokens split
        rows = []  # per index checkpoint: the split sample's per-token gradient rows
        for state in self.states if self.plan.history else self.states[-1:]:
            set_lora_state(self.lm.model, state)
            self.lm.model.eval()
            rows.append(token_gradients(self.lm.model, split, self.lm.tok.pad_token_id, self.lm.device)[0])
        if kind == "prompt" and splitting:
            sides = self._features(query, train=False)
            history = [dataclasses.replace(d, test=s) for d, s in zip(self.data, sides)]
        shares = {}
        for name in splitting:
            m = self.methods[name]
            if kind == "prompt":
                train_x, test_x = method_features(m.proj_key, history[-1], history if self.plan.history else [])
                Q = get_method(name).queries(train_x, test_x, m.params)
            else:
                Q = [q[item:item + 1] for q in self._queries_of_tests(name)]
            tokens = Features(grads=rows[-1], block_names=self.data[-1].train.block_names,
                              history=tuple((d.weight, r) for d, r in zip(self.data, rows)) if self.plan.history
                              else ())
            shares[name] = token_shares(name, m.params, Q, tokens)[0]
        return {"kind": kind, "item": item, "pieces": token_pieces(self.lm.tok, list(split.input_ids)),
                "token_ids": list(split.input_ids), "prompt_len": split.prompt_len,
                "loss": [lab != -100 for lab in split.labels],
                "shares": {k: v.tolist() for k, v in shares.items()},
                "scores": {k: float(v.sum()) for k, v in shares.items()}, "skipped": skipped,
                "seconds": time.perf_counter() - t0}

    def _queries_of_tests(self, name: str) -> list[torch.Tensor]:
        """Method ``name``'s preconditioned queries of the run's test prompts (computed once per session)."""
        if name not in self._test_queries:
            m = self.methods[name]
            now = self.data[-1]
            train_x, test_x = method_features(m.proj_key, now, self.data if self.plan.history else [])
            self._test_queries[name] = get_method(name).queries(train_x, test_x, m.params)
        return self._test_queries[name]

    def _pick(self, methods: list[str] | None, kind: str) -> tuple[list[str], dict[str, str]]:
        """The run's methods to use (all that can answer when ``methods`` is None) and why the others cannot."""
        if kind not in QUERY_KINDS:
            raise InputError(f"query kind must be one of {', '.join(QUERY_KINDS)}, got {kind!r}")
        can = self.info[f"{kind}_methods"]
        cannot = dict(self.info["cannot"][kind])
        if methods is None:
            return list(can), cannot
        unknown = [m for m in methods if m not in self.methods]
        if unknown:
            raise InputError(f"run {self.folder.name!r} has no method(s) {', '.join(unknown)}; it has "
                             f"{', '.join(self.methods)}")
        return [m for m in methods if m in can], {m: cannot[m] for m in methods if m in cannot}

    def _answer(self, kind, prompt, response, generated, scores, cannot, notes, k, seconds, t0) -> Answer:
        top = {}
        for name, s in scores.items():
            idx = top_k_rows(s[None, :], k)[0]
            top[name] = [(int(i), float(s[i])) for i in idx]
        seconds["total_s"] = time.perf_counter() - t0
        return Answer(kind, prompt, response, generated, top, scores, cannot, notes, seconds)
