"""How hard a task is for attribution before any model is trained: response lengths per label, and the
"lexical shortcut" rate. numpy only (plus ``engine.data.lexical``): pages may call it.

- **Response length**: in *words*, i.e. whitespace-separated pieces of the response (``"KESTREL-2618,"`` is
  one word). A model tokenizer gives more (SmolLM2: about 1.3 tokens per word on these tasks).
- **Lexical shortcut rate**: the share of test samples whose highest-BM25 training sample has the test
  sample's label. Query = the test sample's prompt and response, documents = the training samples' prompts
  and responses (joined by a newline; BM25 as in ``engine.data.lexical``). A rate near 1 means plain word overlap
  already finds the right training class, so attribution looks easy whatever the method; the paper's harmful
  mixes are far from that. **Chance** is the rate of a uniformly random top-1: the mean, over test samples, of
  the share of training samples with the same label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from engine.errors import InputError
from engine.data.lexical import BM25Index
from engine.data.tasks.base import Sample


def sample_text(prompt: str, response: str) -> str:
    """The text BM25 sees for one sample."""
    return f"{prompt}\n{response}"


def word_count(text: str) -> int:
    return len(text.split())


@dataclass(frozen=True)
class LengthStats:
    """Response length in words of the samples with one label (quartiles by linear interpolation)."""

    label: str
    n: int
    mean: float
    min: int
    q25: float
    median: float
    q75: float
    max: int


def length_stats(responses: Sequence[str], labels: Sequence[str]) -> list[LengthStats]:
    """Per label (sorted), the response-length distribution in words."""
    if len(responses) != len(labels):
        raise InputError(f"length_stats got {len(responses)} responses but {len(labels)} labels")
    lengths = np.array([word_count(r) for r in responses], dtype=np.int64)
    labs = np.asarray(labels, dtype=object)
    out = []
    for label in sorted(set(labels)):
        x = lengths[labs == label]
        q25, median, q75 = np.percentile(x, [25, 50, 75])
        out.append(LengthStats(label, int(x.size), float(x.mean()), int(x.min()), float(q25), float(median),
                               float(q75), int(x.max())))
    return out


@dataclass(frozen=True)
class Shortcut:
    """``rate``: share of test samples whose BM25 top-1 training sample has the same label; ``chance``: the
    same for a uniformly random top-1; ``top1``: ``[n_test]`` positions of each test sample's top-1."""

    rate: float
    chance: float
    top1: np.ndarray


def lexical_shortcut(train_texts: Sequence[str], train_labels: Sequence[str], test_texts: Sequence[str],
                     test_labels: Sequence[str]) -> Shortcut:
    """The lexical shortcut rate of a task given as texts (see :func:`sample_text`) and labels."""
    if len(train_texts) != len(train_labels) or len(test_texts) != len(test_labels):
        raise InputError("lexical_shortcut needs one label per text in each split")
    if not train_texts or not test_texts:
        raise InputError("lexical_shortcut needs at least one training and one test sample")
    top1 = BM25Index(train_texts).top1(test_texts)
    train_labs = np.asarray(train_labels, dtype=object)
    test_labs = np.asarray(test_labels, dtype=object)
    rate = float(np.mean(train_labs[top1] == test_labs))
    chance = float(np.mean([np.mean(train_labs == lab) for lab in test_labs]))
    return Shortcut(rate, chance, top1)


def task_shortcut(train: Sequence[Sample], test: Sequence[Sample]) -> Shortcut:
    """:func:`lexical_shortcut` of two splits of samples."""
    return lexical_shortcut([sample_text(s.prompt, s.response) for s in train], [s.label for s in train],
                            [sample_text(s.prompt, s.response) for s in test], [s.label for s in test])
