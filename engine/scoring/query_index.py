"""The query index of a run: what every method needs on the training side to answer a NEW query later.

A run folder's ``index/`` (:data:`engine.runfolder.runformat.INDEX_DIR`) has the layout of a feature-cache folder
(:mod:`engine.features.cache`), so the feature stage's readers open it as they open the cache::

    index.json                       what it holds (checkpoints, methods, sizes; see :func:`write_index`)
    ckpt-<c>/train-<i>.safetensors   the training shards at checkpoint c: HARD LINKS to the feature cache's files
                                     (a copy only where the filesystem cannot link), so keeping the index costs no
                                     second copy while the cache is kept, and survives the cache's deletion
    ckpt-<c>/test-0-<m>.safetensors  the run's test features at c (for candidate texts scored against them)
    stats.safetensors                the training-side statistics the methods computed while scoring (damping
                                     sums, EK-FAC eigenvalue sums, Gram factors of blocks with d_l <= n): the
                                     ``TrainData.memo`` entries of :func:`engine.scoring.methods._common.memo_sums`
                                     and ``gram_factor``, so a query session does not pay for them again

Checkpoints: the last scored one, and every one before it when a method sums over checkpoints (TracIn). The
K-FAC factor sums, representations, projections and RepT parts are in the shard files; BM25's corpus is the
run's training texts. Nothing here is pickled.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from engine.catalog.methods import cannot_answer
from engine.features.cache import FeatureCache, contents_of, write_side
from engine.features.plan import FeaturePlan
from engine.features.types import TrainData
from engine.runfolder.runformat import INDEX_DIR, INDEX_FILE

INDEX_FORMAT = 1
_STATS = "stats.safetensors"
_SAVED = ("sq_norm_sum", "ekfac_sums", "gram")  # the memo statistics worth keeping (see the module docstring)


def index_checkpoints(plan: FeaturePlan, last: int) -> list[int]:
    """The checkpoints the index keeps: ``last``, and 1..last when a method reads the history (TracIn)."""
    return list(range(1, last + 1)) if plan.history else [last]


def link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to ``src`` (a copy when the filesystem refuses links, e.g. across devices)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_index(folder: Path, cache: FeatureCache, checkpoints: list[int], shard_count: int, test_sides: dict,
                plan: FeaturePlan, memo: dict, info: dict) -> dict:
    """Write the index into ``folder`` (created; it must not exist) and return what ``index.json`` says.

    cache: the run's feature cache, holding every training shard at ``checkpoints``; test_sides: checkpoint ->
    the run's test :class:`~engine.features.stage.SideFeatures` there (all test samples); memo: the last
    checkpoint's ``TrainData.memo`` after scoring (the statistics to keep); info: what the caller adds to
    ``index.json`` (run, methods, n_train, n_test, shard_size, checkpoint weights...).
    """
    folder = Path(folder)
    folder.mkdir(parents=True)
    for c in checkpoints:
        for i in range(shard_count):
            src = cache.train_file(c, i)
            link_or_copy(src, folder / src.relative_to(cache.folder))
        side = test_sides[c]
        scored_plan = plan if c == checkpoints[-1] else FeaturePlan(grads=True)
        write_side(FeatureCache(folder).test_file(c, 0, side.n), side, contents_of(scored_plan, False, True), 0, 0)
    tensors = {_key_text(k): v.detach().cpu().contiguous() for k, v in memo.items()
               if isinstance(k, tuple) and k[0] in _SAVED and isinstance(v, torch.Tensor) and not _is_copy(k, v, info)}
    save_file(tensors, str(folder / _STATS), metadata={"format": str(INDEX_FORMAT)})
    body = {"format": INDEX_FORMAT, "checkpoints": checkpoints, "shards": shard_count, **info}
    body["size_bytes"] = index_size(folder)
    (folder / INDEX_FILE).write_text(json.dumps(body, indent=1, sort_keys=True), encoding="utf-8")
    return body


def index_body(spec, methods: list[str], n_train: int, n_test: int, states) -> dict:
    """What ``index.json`` says about the run beside the files: its spec hash, its methods and which of them
    answer a new prompt or a candidate text (and why the others cannot), the sample counts, the shard size
    and every checkpoint's TracIn weight (``states``: the run's :class:`~engine.model.states.AdapterStates`)."""
    prompt, not_prompt = answerable(methods, "prompt")
    candidate, not_candidate = answerable(methods, "candidate")
    return {"run": spec.run_name, "spec_hash": spec.spec_hash, "methods": methods, "prompt_methods": prompt,
            "candidate_methods": candidate, "cannot": {"prompt": not_prompt, "candidate": not_candidate},
            "n_train": n_train, "n_test": n_test, "shard_size": spec.scoring.shard_size,
            "weights": list(states.weights)}


def _is_copy(key: tuple, value: torch.Tensor, info: dict) -> bool:
    """A Gram "factor" of a block with n < d_l is the gradients themselves: already in the shard files."""
    return key[0] == "gram" and value.shape[0] == info["n_train"]


def index_size(folder: Path) -> int:
    """Bytes of the files under ``folder`` (before ``index.json`` is written: the data files), each counted once
    (hard links to the feature cache included: they are what the index costs once the cache is deleted)."""
    seen, total = set(), 0
    for p in Path(folder).rglob("*"):
        if p.is_file():
            st = p.stat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def restore_stats(folder: Path, train: TrainData) -> int:
    """Put the saved statistics into ``train.memo`` (the last checkpoint's TrainData); return how many."""
    path = Path(folder) / _STATS
    if not path.is_file():
        return 0
    with safe_open(str(path), "pt") as f:
        for name in f.keys():
            train.memo[_key_from(name)] = f.get_tensor(name)
        return len(list(f.keys()))


def answerable(methods: list[str], kind: str) -> tuple[list[str], dict[str, str]]:
    """``(methods that can answer a query of kind, {method: why not})`` (the rule: ``catalog.cannot_answer``)."""
    why = {m: cannot_answer(m, kind) for m in methods}
    return [m for m in methods if why[m] is None], {m: w for m, w in why.items() if w is not None}


def index_folder(run_folder: Path) -> Path:
    return Path(run_folder) / INDEX_DIR


# A memo key is a tuple of str / int / float / torch.dtype / torch.device; saved as a tagged JSON list.


def _key_text(key: tuple) -> str:
    def tag(x):
        if isinstance(x, torch.dtype):
            return ["dtype", str(x).removeprefix("torch.")]
        if isinstance(x, torch.device):
            return ["device", str(x)]
        if isinstance(x, bool) or not isinstance(x, (str, int, float)):
            raise TypeError(f"memo key part {x!r} cannot be saved")
        return [type(x).__name__, x]

    return json.dumps([tag(x) for x in key])


def _key_from(text: str) -> tuple:
    make = {"dtype": lambda v: getattr(torch, v), "device": torch.device, "str": str, "int": int, "float": float}
    return tuple(make[t](v) for t, v in json.loads(text))
