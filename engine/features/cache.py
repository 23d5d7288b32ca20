"""The on-disk feature cache: every training shard's features at every checkpoint, one safetensors file each.

Why: per-sample gradients of a real fine-tuning set do not fit in memory (900 samples x 2.1M LoRA parameters =
7.5 GB per checkpoint), and a run that dies after hours of gradient passes should not start again from zero.
So the features stage writes each shard to disk as soon as it is computed, methods stream over the files
(:class:`~engine.features.types.TrainData`), and a run started again with the same settings finds the
shards that are already there and computes only the rest.

Layout of ``<root>/<key>/`` (``root``: ``$INFLUENCE_FEATURES`` or ``features/`` beside the runs folder; ``key``: a hash of
everything the features depend on — model, adapter weights, data, LoRA and training recipe (``train.pad_attention``
included), encoding, dtype, device, batch and shard sizes, the torch/transformers/peft versions — but not the
methods, so new methods reuse the features)::

    key.json                      what the key was made from
    states.safetensors            the adapter states (checkpoint 0..C) and, in its metadata, the fine-tuning
                                  losses, TracIn weights, steps and sources, so a resumed run does not train again
    ckpt-<c>/train-<i>.safetensors   shard i of the training samples at checkpoint c
    ckpt-<c>/test-<a>-<b>.safetensors  test samples a:b (one part per process)

A shard file holds ``grads.<l>`` [rows, d_l] (when the plan keeps full gradients), ``reps``, ``loss``,
``kfac.act.<l>`` / ``kfac.grad.<l>`` (this shard's factor sums), ``proj.<dim>.<seed>.<kind>.<l>`` and ``rept``,
with a JSON header (rows, block names and widths, what it contains). Files appear only complete (written under a
temporary name, then renamed). No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import socket
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from engine.features.grads import KroneckerFactors
from engine.features.plan import FeaturePlan, ProjKey
from engine.features.projection import ProjectedGrads
from engine.features.types import Features
from engine.model.finetune import library_versions
from engine.model.states import AdapterStates
from engine.runfolder.runformat import pid_alive

FORMAT = 1


def feature_key(spec, task, adapter_digest: str | None) -> tuple[str, dict]:
    """``(key, what it hashes)``: the settings the features depend on, and the data itself."""
    d = spec.to_dict()
    samples = hashlib.sha256(json.dumps(
        [[s.prompt, s.response, s.label] for s in (*task.train, *task.test)], ensure_ascii=False).encode()).hexdigest()
    basis = {"format": FORMAT, "model": d["model"], "adapter_sha256": adapter_digest, "lora": d["lora"],
             "train": d["train"], "dtype": d["dtype"], "device": d["device"], "samples_sha256": samples,
             "n_train": len(task.train), "n_test": len(task.test),
             "grad_batch_size": d["scoring"]["grad_batch_size"], "shard_size": d["scoring"]["shard_size"],
             "libraries": library_versions()}
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:24], basis


def proj_name(key: ProjKey) -> str:
    """The tensor-name prefix of a projection in a cache file."""
    return f"proj.{key[0]}.{key[1]}.{key[2]}"


def contents_of(plan: FeaturePlan, train: bool, keep_grads: bool) -> dict:
    """What a file written for ``plan`` holds (the header's ``contents``)."""
    return {"grads": bool(keep_grads), "kfac": bool(plan.kfac and train), "rept": bool(plan.rept),
            "proj": sorted(proj_name(k) for k in plan.projections)}


def covers(have: dict, need: dict) -> bool:
    """Whether a file with contents ``have`` holds everything ``need`` asks for."""
    return all(have.get(k) or not need[k] for k in ("grads", "kfac", "rept")) and \
        set(need["proj"]) <= set(have.get("proj", []))


LEASES = "leases"  # one empty file per process using a cache folder: <host>-<pid>


def _lease_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _held(name: str) -> bool:
    host, _, pid = name.rpartition("-")
    if host != socket.gethostname():
        return True
    return pid.isdigit() and pid_alive(int(pid))


@dataclass
class FeatureCache:
    """One cache folder (``root/key``); methods to write and read shard files."""

    folder: Path

    @staticmethod
    def open(root: Path, key: str, basis: dict) -> FeatureCache:
        folder = Path(root) / key
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_text(folder / "key.json", json.dumps(basis, indent=1, sort_keys=True))
        return FeatureCache(folder)

    # ---- files
    def train_file(self, checkpoint: int, shard: int) -> Path:
        return self.folder / f"ckpt-{checkpoint}" / f"train-{shard:05d}.safetensors"

    def test_file(self, checkpoint: int, start: int, stop: int) -> Path:
        """The test samples ``start:stop`` at checkpoint c (one part per process; named by rows, so a run resumed
        with another number of processes finds the parts it can reuse)."""
        return self.folder / f"ckpt-{checkpoint}" / f"test-{start}-{stop}.safetensors"

    def has(self, path: Path, need: dict) -> bool:
        """A complete file whose contents cover ``need``."""
        header = read_header(path)
        return header is not None and covers(header["contents"], need)

    # ---- who is using it: two runs with the same features (two workers, one spec under two names) share one
    # folder, and the first to finish must not delete it while the other still reads it (its query index links it)
    def lease(self) -> None:
        """Mark the folder as in use by this process until :meth:`release`."""
        (self.folder / LEASES).mkdir(parents=True, exist_ok=True)
        (self.folder / LEASES / _lease_name()).write_text("")

    def release(self) -> None:
        """Drop this process's lease (if any)."""
        (self.folder / LEASES / _lease_name()).unlink(missing_ok=True)
        try:
            (self.folder / LEASES).rmdir()
        except OSError:  # other leases, or none was ever taken
            pass

    def in_use(self) -> bool:
        """Whether another live process holds a lease: one of this machine whose pid is alive, or any of another
        machine (which cannot be checked from here; the folder then stays, which costs disk, not results)."""
        folder = self.folder / LEASES
        return folder.is_dir() and any(_held(p.name) for p in folder.iterdir() if p.name != _lease_name())

    def remove(self) -> None:
        """Delete this key's folder (and the cache root when nothing else is left in it), unless another process
        still uses it (:meth:`in_use`): then the last of them deletes it."""
        self.release()
        if self.in_use():
            return
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self.folder.parent.rmdir()
        except OSError:
            pass

    # ---- adapter states
    def save_states(self, states) -> None:
        tensors = {f"{c}.{k}": v.contiguous() for c, st in enumerate([states.initial, *states.states])
                   for k, v in st.items()}
        meta = {"n": len(states.states), "weights": states.weights, "sources": states.sources,
                "steps": states.steps, "losses": states.losses}
        _atomic_save(tensors, {"json": json.dumps(meta)}, self.folder / "states.safetensors")

    def load_states(self):
        """The cached adapter states (:class:`engine.model.states.AdapterStates`), or None."""
        path = self.folder / "states.safetensors"
        if not path.is_file():
            return None
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["json"])
            all_states: list[dict] = [{} for _ in range(meta["n"] + 1)]
            for name in f.keys():
                c, key = name.split(".", 1)
                all_states[int(c)][key] = f.get_tensor(name)
        return AdapterStates(all_states[0], all_states[1:], meta["weights"], meta["sources"], meta["steps"],
                             [tuple(x) for x in meta["losses"]])


def write_side(path: Path, side, contents: dict, start: int, rank: int) -> None:
    """Write one shard's (or test part's) :class:`engine.features.stage.SideFeatures` atomically."""
    tensors: dict[str, torch.Tensor] = {"reps": side.reps, "loss": side.loss}
    if contents["grads"]:
        tensors.update({f"grads.{l}": g for l, g in enumerate(side.grads)})
    if contents["kfac"]:
        tensors.update({f"kfac.act.{l}": a for l, a in enumerate(side.kfac.act)})
        tensors.update({f"kfac.grad.{l}": g for l, g in enumerate(side.kfac.grad)})
    widths = {}
    for key, pg in side.projections.items():
        name = proj_name(key)
        widths[name] = list(pg.widths)
        tensors.update({f"{name}.{l}": b for l, b in enumerate(pg.blocks)})
    if contents["rept"]:
        tensors["rept"] = side.rept
    header = side_header(side.n, start, rank, side.block_names, [int(g.shape[1]) for g in side.grads]
                         if side.grads else None, widths, contents, side.kfac.tokens if contents["kfac"] else 0)
    _atomic_save(_unshared({k: v.contiguous() for k, v in tensors.items()}), {"json": json.dumps(header)}, path)


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of every tensor that shares its memory with an earlier one (safetensors refuses shared tensors; the
    K-FAC activation factors of blocks fed one input are one object: engine.features.grads._add_factors)."""
    seen, out = set(), {}
    for k, v in tensors.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else None
        out[k] = v.clone() if ptr is not None and ptr in seen else v
        seen.add(ptr)
    return out


def side_header(rows: int, start: int, rank: int, block_names, widths: list[int] | None, proj_widths: dict,
                contents: dict, kfac_tokens: int) -> dict:
    """The JSON header of a shard or test-part file (:func:`write_side`, :class:`ShardWriter`)."""
    return {"format": FORMAT, "rows": rows, "start": start, "rank": rank, "block_names": list(block_names),
            "widths": widths, "proj_widths": proj_widths, "contents": contents, "kfac_tokens": kfac_tokens}


class ShardWriter:
    """A shard file written in place as its gradient pass runs: the training gradients go to disk a batch of rows
    at a time, so a shard's gradients never sit in memory whole (0.9 MB per SmolLM2 sample, 33 MB per sample of a
    Llama-2-7B with r=16 on q/v: a shard of 512 would hold 17 GB). The result is the same safetensors file as
    :func:`write_side` writes; it appears only complete (a temporary name until :meth:`close` renames it).

    ``tensors``: every tensor's name -> (dtype, shape), declared up front; ``rows`` of the gradient blocks arrive
    through :meth:`write_rows` in any order, everything else through :meth:`write` at the end. The header's
    metadata (the JSON header of :func:`write_side`) is written last, into room reserved for it at the start.
    """

    _DTYPES = {torch.float32: "F32", torch.float64: "F64"}
    _RESERVE = 256  # bytes of header room for values only known at the end (kfac_tokens)

    def __init__(self, path: Path, tensors: dict[str, tuple[torch.dtype, tuple[int, ...]]], metadata: dict):
        self.path = path
        self.entries: dict[str, dict] = {}
        self.dtypes: dict[str, torch.dtype] = {}
        offset = 0
        # laid out as safetensors' own writer lays them out (widest element first, then by name): every tensor
        # starts aligned to its element size
        for name, (dtype, shape) in sorted(tensors.items(), key=lambda kv: (-_itemsize(kv[1][0]), kv[0])):
            size = _itemsize(dtype) * math.prod(shape)
            self.entries[name] = {"dtype": self._DTYPES[dtype], "shape": list(shape),
                                  "data_offsets": [offset, offset + size]}
            self.dtypes[name] = dtype
            offset += size
        self.header_len = len(self._header(metadata)) + self._RESERVE
        self.header_len += -self.header_len % 8  # the data starts 8-byte aligned, as safetensors writes it
        self.data_start = 8 + self.header_len
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        self.fd: int | None = os.open(self.tmp, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(self.fd, self.data_start + offset)
        except OSError:
            self.abort()
            raise

    def _header(self, metadata: dict) -> bytes:
        return json.dumps({"__metadata__": {"json": json.dumps(metadata)}, **self.entries},
                          separators=(",", ":")).encode()

    def _put(self, name: str, byte_offset: int, data: torch.Tensor) -> None:
        buf = memoryview(data.detach().to(device="cpu", dtype=self.dtypes[name]).contiguous().numpy()).cast("B")
        at = self.data_start + self.entries[name]["data_offsets"][0] + byte_offset
        while buf:
            n = os.pwrite(self.fd, buf, at)
            buf, at = buf[n:], at + n

    def write_rows(self, name: str, rows: torch.Tensor, values: torch.Tensor) -> None:
        """Rows ``rows`` (positions in the shard) of the 2-D tensor ``name``: ``values`` [len(rows), width]."""
        width = self.entries[name]["shape"][1] * _itemsize(self.dtypes[name])
        order = torch.argsort(rows)
        rows, values = rows[order], values[order]
        i = 0
        while i < len(rows):  # runs of consecutive rows go in one write
            j = i + 1
            while j < len(rows) and int(rows[j]) == int(rows[j - 1]) + 1:
                j += 1
            self._put(name, int(rows[i]) * width, values[i:j])
            i = j

    def read(self, name: str) -> torch.Tensor:
        """A tensor as written so far (a block read back to be projected: from the page cache, not kept)."""
        a, b = self.entries[name]["data_offsets"]
        data = os.pread(self.fd, b - a, self.data_start + a)
        return torch.frombuffer(bytearray(data), dtype=self.dtypes[name]).reshape(self.entries[name]["shape"])

    def write(self, name: str, tensor: torch.Tensor) -> None:
        if list(tensor.shape) != self.entries[name]["shape"]:
            raise ValueError(f"{name}: shape {tuple(tensor.shape)}, declared {self.entries[name]['shape']}")
        self._put(name, 0, tensor)

    def close(self, metadata: dict) -> None:
        """Write the header with the final ``metadata``, then rename the file into place."""
        head = self._header(metadata)
        if len(head) > self.header_len:
            raise ValueError("the shard file's header outgrew the room reserved for it")
        os.pwrite(self.fd, self.header_len.to_bytes(8, "little") + head + b" " * (self.header_len - len(head)), 0)
        fd, self.fd = self.fd, None
        os.close(fd)
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """Close and remove the temporary file (nothing partial stays)."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)
        self.tmp.unlink(missing_ok=True)


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


def read_header(path: Path) -> dict | None:
    """A cache file's header, or None when it is missing or unreadable (a run died while writing)."""
    try:
        with safe_open(str(path), "pt") as f:
            header = json.loads(f.metadata()["json"])
    except Exception:  # noqa: BLE001 - a missing, truncated or foreign file is simply not there yet
        return None
    return header if header.get("format") == FORMAT else None


class TensorLRU:
    """Tensors read from cache files, kept while their total stays under ``budget`` bytes (least recently used
    out first): a small run stays in memory after the first pass, a large one is read shard by shard."""

    def __init__(self, budget: int, dtype: torch.dtype | None = None):
        self.budget = budget
        # floating tensors are converted to ``dtype`` as they are read (None: kept as stored): a query session whose
        # methods compute in float64 keeps the upcast copy, so each query does not convert the index again (float32
        # to float64 is exact: the scores do not change)
        self.dtype = dtype
        self.items: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
        self.bytes = 0

    def get(self, path: Path, names: list[str]) -> dict[str, torch.Tensor]:
        out, missing = {}, []
        for n in names:
            t = self.items.get((str(path), n))
            if t is None:
                missing.append(n)
            else:
                self.items.move_to_end((str(path), n))
                out[n] = t
        if missing:
            with safe_open(str(path), "pt") as f:
                for n in missing:
                    t = f.get_tensor(n)
                    if self.dtype is not None and t.is_floating_point():
                        t = t.to(self.dtype)
                    out[n] = t
                    size = t.numel() * t.element_size()
                    if size <= self.budget:
                        self.items[(str(path), n)] = t
                        self.bytes += size
            while self.bytes > self.budget and self.items:
                _, old = self.items.popitem(last=False)
                self.bytes -= old.numel() * old.element_size()
        return out


def load_features(path: Path, lru: TensorLRU, blocks, header: dict, proj_key: ProjKey | None):
    """:class:`engine.features.types.Features` of one cache file: gradient ``blocks`` (None = all, () = none), the reps,
    RepT parts and, when ``proj_key`` is given, that projection. K-FAC factors are summed separately
    (:func:`kfac_totals`)."""
    c = header["contents"]
    n_blocks = len(header["block_names"])
    picked = [] if not c["grads"] else list(range(n_blocks) if blocks is None else blocks)
    names = ["reps"] + (["rept"] if c["rept"] else []) + [f"grads.{l}" for l in picked]
    pname = proj_name(proj_key) if proj_key is not None else None
    if pname is not None and pname in c["proj"]:
        names += [f"{pname}.{l}" for l in range(n_blocks)]
    t = lru.get(path, names)
    proj = None
    if pname is not None and pname in c["proj"]:
        proj = ProjectedGrads([t[f"{pname}.{l}"] for l in range(n_blocks)], *proj_key,
                              tuple(header["proj_widths"][pname]))
    return Features(grads=[t[f"grads.{l}"] for l in picked] if c["grads"] else None, reps=t["reps"],
                    block_names=tuple(header["block_names"]), proj=proj, rept=t.get("rept"))


def kfac_totals(paths: list[Path], headers: list[dict], reduce, template: Path) -> KroneckerFactors | None:
    """The K-FAC factor sums over this process's shard files, summed over processes with ``reduce``
    (``template``: any shard file, for the shapes when this process has none)."""
    top = read_header(template)
    if top is None or not top["contents"]["kfac"]:
        return None
    with safe_open(str(template), "pt") as f:
        n_blocks = len(top["block_names"])
        act = [torch.zeros_like(f.get_tensor(f"kfac.act.{l}")) for l in range(n_blocks)]
        grad = [torch.zeros_like(f.get_tensor(f"kfac.grad.{l}")) for l in range(n_blocks)]
    tokens = samples = 0
    for path, h in zip(paths, headers):
        with safe_open(str(path), "pt") as f:
            for l in range(n_blocks):
                act[l] += f.get_tensor(f"kfac.act.{l}")
                grad[l] += f.get_tensor(f"kfac.grad.{l}")
        tokens += h["kfac_tokens"]
        samples += h["rows"]
    counts = reduce(torch.tensor([float(tokens), float(samples)], dtype=torch.float64))
    return KroneckerFactors(_share_equal([reduce(a) for a in act]), [reduce(g) for g in grad], int(counts[0]),
                            int(counts[1]))


def _share_equal(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The list with every tensor equal to an earlier one replaced by that one: the q and v ``lora_A`` blocks of a
    layer see the same input, so their activation factors are equal (SmolLM2: 30 x 2.6 MB held twice through
    every scoring stage). Read-only from here on; the Kronecker methods then also decompose each one once."""
    seen: dict[tuple, list[torch.Tensor]] = {}
    out = []
    for t in tensors:
        key = (tuple(t.shape), t.dtype, float(t.sum()))
        same = next((u for u in seen.get(key, []) if torch.equal(u, t)), None)
        if same is None:
            seen.setdefault(key, []).append(t)
        out.append(t if same is None else same)
    return out


def _atomic_save(tensors: dict, metadata: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
