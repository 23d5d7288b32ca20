"""Where token-level attributions live and how they are written and read (no torch: the pages read them).

Token attributions are computed on demand (``python -m engine tokens``, :mod:`engine.scoring.tokens`), not by a
run, so they are kept beside the run folders rather than in them (run folders are immutable)::

    <tokens dir>/<run>/<manifest id>/ck<c>-train<i>.json    one training sample at one checkpoint, every test sample
    <tokens dir>/<run>/job.pid, job.log, job.json            the job computing them (one at a time per run)

``<tokens dir>`` is ``$INFLUENCE_TOKENS`` or ``tokens/`` next to the store file. ``<manifest id>`` is the first 16 hex
digits of the run manifest's sha256, so a run re-run under the same name never shows stale tokens. A result file
(:class:`TokenResult`) holds, for every method whose score splits over tokens (``engine.catalog.methods``'s ``tokens``),
``shares[j][t]``: training token t's share of the score of training sample i for test sample j — the shares of
a row sum to that score (larger = more responsible, as every score).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.catalog.methods import method_info
from engine.runfolder.runformat import MANIFEST


def no_token_view(method: str) -> str | None:
    """Why ``method``'s scores have no token view (None when they do): the rule is the catalog's ``tokens``."""
    info = method_info(method)
    if info.tokens:
        return None
    if info.family == "representation":
        return ("it compares one vector per sample (the hidden state at the last prompt token, for RepT joined "
                "with its gradient there), not a sum over the training sample's tokens")
    return "a baseline without a model: there is no gradient to split over the training sample's tokens"


def manifest_id(run_folder: Path) -> str:
    """The first 16 hex digits of the sha256 of the run's manifest.json ("" when it cannot be read)."""
    try:
        return hashlib.sha256((Path(run_folder) / MANIFEST).read_bytes()).hexdigest()[:16]
    except OSError:
        return ""


def run_dir(tokens_dir: Path, run: str) -> Path:
    return Path(tokens_dir) / run


def result_path(tokens_dir: Path, run: str, manifest: str, checkpoint: int, train_id: int) -> Path:
    return run_dir(tokens_dir, run) / manifest / f"ck{int(checkpoint)}-train{int(train_id)}.json"


@dataclass
class TokenResult:
    """Token shares of one training sample at one checkpoint, for every test sample.

    pieces: the text of each token (decoded so that their concatenation is the decoded sample); token_ids;
    prompt_len: tokens before it are the prompt; loss: per token, whether its next-token prediction is in the
    training loss; shares: method -> [n_test][T]; scores: method -> [n_test], the sum of each row (the
    recomputed pair score); stored: method -> [n_test], the run's own stored scores of this training sample
    (NaN where missing); skipped: method -> why it has no token view; seconds: compute time of the job.
    """

    run: str
    manifest: str
    checkpoint: int
    train_id: int
    pieces: list[str]
    token_ids: list[int]
    prompt_len: int
    loss: list[bool]
    shares: dict[str, list[list[float]]] = field(default_factory=dict)
    scores: dict[str, list[float]] = field(default_factory=dict)
    stored: dict[str, list[float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def write(self, path: Path) -> None:
        """Atomically (a temp file renamed into place): a reader never sees half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(self), allow_nan=True), encoding="utf-8")
        os.replace(tmp, path)

    @staticmethod
    def read(path: Path) -> TokenResult | None:
        """The result at ``path``, or None if there is none (or it is not a result file)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return TokenResult(**data)
        except (OSError, ValueError, TypeError):
            return None
