"""BM25 word-overlap scores between texts: the one home of BM25 in the project.

Used by the task-difficulty figures (``engine.tasks.difficulty``: the "lexical shortcut" rate) and meant to be
wrapped as a ``bm25`` attribution baseline. It imports neither torch nor DuckDB, so pages may call it.

Tokenisation (:func:`tokenize`): the text is lower-cased and split into maximal runs of Unicode letters and
digits (``[^\\W_]+``); punctuation, underscores and whitespace separate tokens. No stemming, no stop-word list
(the IDF already gives common words little weight). ``"KESTREL-2618, it's"`` → ``["kestrel", "2618", "it", "s"]``.

Scoring: Okapi BM25 in the Lucene form, with ``N`` documents (training texts), ``df(t)`` of them containing
token ``t``, ``tf(t, d)`` the count of ``t`` in document ``d``, ``|d|`` its token count and ``avgdl`` the mean
of ``|d|``::

    idf(t)   = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))            (never negative)
    s(q, d)  = Σ_{t in q} idf(t) · tf(t, d) / (tf(t, d) + k1 · (1 - b + b · |d| / avgdl))

The sum runs over the query's tokens *with repetition* (a word twice in the query counts twice); tokens that
occur in no document add nothing. Lucene drops the constant factor ``(k1 + 1)`` of the original Okapi form,
which changes no ranking. Defaults ``k1 = 1.5``, ``b = 0.75``. Larger = more lexically similar; a query with no
token in common with a document scores 0 against it.

The computation is done by ``bm25s`` (sparse precomputed document-term scores, float64 here).
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from engine.errors import InputError

K1 = 1.5
B = 0.75

_TOKEN = re.compile(r"[^\W_]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased runs of letters and digits (see the module docstring)."""
    return _TOKEN.findall(text.lower())


def _tokenized(texts: Sequence[str], what: str) -> list[list[str]]:
    out = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"{what}[{i}] must be text, got {type(t).__name__}")
        out.append(tokenize(t))
    return out


class BM25Index:
    """BM25 over a fixed set of documents (the training texts); :meth:`scores` ranks them for queries."""

    def __init__(self, documents: Sequence[str], k1: float = K1, b: float = B):
        if not (k1 >= 0 and 0 <= b <= 1):
            raise InputError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1!r}, b={b!r}")
        docs = _tokenized(documents, "documents")
        self.n_docs = len(docs)
        self._index = None
        if any(docs):  # bm25s cannot index a corpus without a single token; then every score is 0
            import bm25s

            self._index = bm25s.BM25(k1=k1, b=b, method="lucene", idf_method="lucene", dtype="float64")
            self._index.index(docs, show_progress=False)

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """``[len(queries), n_docs]`` float64 BM25 scores (larger = more similar)."""
        toks = _tokenized(queries, "queries")
        out = np.zeros((len(toks), self.n_docs), dtype=np.float64)
        if self._index is None:
            return out
        for i, q in enumerate(toks):
            ids = self._index.get_tokens_ids(q)  # leaves out tokens no document has
            if ids:
                out[i] = self._index.get_scores_from_ids(ids)
        return out

    def top1(self, queries: Sequence[str], chunk: int = 256) -> np.ndarray:
        """``[len(queries)]`` int64: the position of each query's highest-scoring document (ties: the lowest
        position), computed ``chunk`` queries at a time so no full score matrix is held."""
        if self.n_docs == 0:
            raise InputError("BM25 top-1 needs at least one document")
        parts = [np.argmax(self.scores(queries[i:i + chunk]), axis=1) for i in range(0, len(queries), chunk)]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def bm25_scores(train_texts: Sequence[str], test_texts: Sequence[str], k1: float = K1, b: float = B) -> np.ndarray:
    """``[n_test, n_train]`` float64: BM25 score of every training text (document) for every test text (query);
    larger = more lexically similar. See the module docstring for the tokenisation and formula."""
    return BM25Index(train_texts, k1, b).scores(test_texts)
