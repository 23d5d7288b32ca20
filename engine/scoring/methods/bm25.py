"""The BM25 baseline: word overlap between each test sample and each training sample, no model involved.

Formula: Okapi BM25 as :mod:`engine.data.lexical` computes it (its docstring gives tokenisation and formula), with the
training texts as documents and each test text as the query:

    s(z_i, z') = BM25(query = text(z'), document = text(z_i); k1, b)

where ``text`` is the prompt and the response (``engine.data.tasks.difficulty.sample_text``). DATE-LM and TrackStar find
that BM25 beats gradient methods on some tasks: an attribution method that cannot beat it explains nothing beyond
shared words. Document frequencies are over all training texts: the index (``engine.data.lexical.BM25Index``, a sparse
weight per distinct (training sample, word)) is built once, then each training shard is one sparse product.

Shapes: ``Features.texts`` (n train, m test) -> S [m, n] float64 >= 0; larger = more lexical overlap = ranked higher.
"""

from __future__ import annotations

import numpy as np

from engine.data.lexical import BM25Index
from engine.errors import InputError
from engine.features.types import Features

from .base import register


def _index(train, test: Features, p):
    if train.texts is None or test.texts is None:
        raise InputError("bm25 needs the texts of the training and test samples (Features.texts)")

    index = BM25Index(list(train.texts), k1=p.k1, b=p.b)
    return index, index.queries(list(test.texts))


def _blocks(train, test: Features, p):
    """One block per training shard of ``train`` (a TrainData, whose ``texts`` are those of ALL training
    samples: the document frequencies and mean length are the whole set's on every process)."""
    index, Q = _index(train, test, p)
    for start, stop in train.bounds:
        yield start, stop, index.block(Q, start, stop)


@register("bm25", blocks=_blocks)
def bm25(train: Features, test: Features, p) -> np.ndarray:
    """BM25 scores -> float64 [n_test, n_train]; p: :class:`engine.catalog.methods.Bm25Params` (k1, b)."""
    index, Q = _index(train, test, p)
    return index.block(Q, 0, index.n_docs)
