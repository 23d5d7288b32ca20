"""The retrain bank: retrained LoRA adapters, and what was measured on them, kept under a content hash so that the
noise floor, the removal groups, the LDS, the counterfactual check and later runs reuse a retraining instead of
fine-tuning again.

An entry's key is the SHA-256 of the canonical JSON of
- ``format``: :data:`FORMAT` (bumped whenever the training code changes what a retraining produces);
- ``base``: a hash of every frozen weight of the base model (name, dtype, shape, bytes);
- ``adapter``: a hash of the initial LoRA state and the LoRA configuration (r, alpha, dropout, targets);
- ``data``: a hash of the encoded training set in order (token ids, labels, prompt boundary, pads) and the pad id —
  so tokenizer, template, preprocessing and max length are all in it;
- ``recipe``: epochs, batch size, learning rate, weight decay, gradient clipping, dtype, device type, the pad
  attention (``train.pad_attention``) and how a removal is made (``removal``: weight 0 in the original batches);
- ``libraries``: the torch, transformers and peft versions (engine.model.finetune.library_versions);
- ``removed``: the removed training ids (sorted) and ``seed``: the data-order and dropout seed.
Entries stored before ``removal``, ``pad_attention`` and ``libraries`` were key material (removal by skipping,
no pad attention) have other keys: they are never read as entries of the new kind.
Measurements are kept per entry under a second key (the test set, the reference adapter the KL is taken against,
the generation settings), so a new test set re-measures a stored adapter without retraining it.

Layout: ``<root>/<key[:2]>/<key>/adapter.safetensors`` (+ ``meta.json``, ``eval-<key>.json``). Safetensors and
JSON only, no pickle. Writes are atomic: an entry is written into a hidden temp folder and renamed into place (a
concurrent writer of the same key loses the race harmlessly); a measurement file is written to a temp file and
``os.replace``d. The root is ``analysis.retrain_bank`` in the spec, else ``$INFLUENCE_RETRAIN_BANK``, else
``retrain-bank`` next to the runs folder (:func:`bank_root`). Results agree across machines and thread counts only
up to floating-point rounding; the key does not try to capture that.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable, Sequence

import torch

from engine.paths import retrain_bank_dir

# Hashed into every bank key: a frozen identity string, not a module path (the dropout masks now live in
# engine.model.dropout; renaming the module changed nothing a retraining produces, so the string stays)
FORMAT = "retrain-v1: order=permutation of the full set per (seed, epoch); dropout=engine.sample_dropout v1"


def bank_root(setting: str, runs_dir: Path | None) -> Path | None:
    """Where the bank lives: the spec's ``analysis.retrain_bank`` ("off" = nowhere), else ``$INFLUENCE_RETRAIN_BANK``,
    else ``<runs_dir>/../retrain-bank``; None when nothing says where (retrainings are then not kept)."""
    if setting == "off":
        return None
    if setting:
        return Path(setting).expanduser()
    return retrain_bank_dir(runs_dir)


def _digest_tensors(h, items: Iterable[tuple[str, torch.Tensor]]) -> None:
    for name, t in items:
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """Hash of a state dict (names, dtypes, shapes, bytes) in name order."""
    h = hashlib.sha256()
    _digest_tensors(h, sorted(state.items()))
    return h.hexdigest()


def base_digest(model) -> str:
    """Hash of every frozen parameter and buffer of a peft model's base (the LoRA weights excluded)."""
    h = hashlib.blake2b(digest_size=32)  # ~1 GB/s: the base weights are hashed once per retraining stage
    items = [(n, p) for n, p in model.named_parameters() if "lora_" not in n]
    items += [(n, b) for n, b in model.named_buffers() if "lora_" not in n]
    _digest_tensors(h, sorted(items, key=lambda x: x[0]))
    return h.hexdigest()


def encoded_digest(encs: Sequence, pad_id: int | None) -> str:
    """Hash of encoded samples in order (ids, labels, prompt boundary, leading pads, whether they attend) and the
    pad id."""
    h = hashlib.sha256(f"pad={pad_id}".encode())
    for e in encs:
        fields = [list(e.input_ids), list(e.labels), e.prompt_len, e.n_pad]
        h.update(json.dumps(fields + ([True] if e.unmask_pads else [])).encode())  # as before unless unmasked
    return h.hexdigest()


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class RetrainBank:
    """Retrained adapters keyed by content (see the module docstring). ``root`` None keeps nothing."""

    def __init__(self, root: Path | None, identity: dict):
        self.root = Path(root) if root is not None else None
        self.identity = {"format": FORMAT, **identity}

    def key(self, removed: Sequence[int], seed: int) -> str:
        return _hash({**self.identity, "removed": sorted(int(i) for i in removed), "seed": int(seed)})

    def _dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def load_state(self, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        """(LoRA state, meta) of a stored retraining, or None."""
        if self.root is None:
            return None
        folder = self._dir(key)
        if not (folder / "meta.json").is_file():
            return None
        from safetensors.torch import load_file

        return load_file(str(folder / "adapter.safetensors")), json.loads((folder / "meta.json").read_text("utf-8"))

    def save_state(self, key: str, state: dict[str, torch.Tensor], meta: dict) -> None:
        """Store a retraining atomically (no-op without a root or when the key is already stored)."""
        if self.root is None or (self._dir(key) / "meta.json").is_file():
            return
        from safetensors.torch import save_file

        final = self._dir(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{key[:8]}-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "adapter.safetensors"))
            (tmp / "meta.json").write_text(json.dumps({**meta, "key": key, "identity": self.identity}, indent=1),
                                           encoding="utf-8")
            os.rename(tmp, final)
        except OSError:
            if not (final / "meta.json").is_file():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # left only when another writer won the race

    def load_eval(self, key: str, eval_key: str) -> dict | None:
        if self.root is None:
            return None
        path = self._dir(key) / f"eval-{eval_key}.json"
        return json.loads(path.read_text("utf-8")) if path.is_file() else None

    def save_eval(self, key: str, eval_key: str, values: dict) -> None:
        if self.root is None or not (self._dir(key) / "meta.json").is_file():
            return
        path = self._dir(key) / f"eval-{eval_key}.json"
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(values), encoding="utf-8")
        os.replace(tmp, path)


def eval_key(test_digest: str, reference_digest: str, settings: dict) -> str:
    """Key of one set of measurements on a stored adapter."""
    return _hash({"test": test_digest, "reference": reference_digest, **settings})[:32]
