"""BM25 word-overlap scores between texts: the one home of BM25 in the project.

Used by the task-difficulty figures (``engine.data.tasks.difficulty``: the "lexical shortcut" rate) and meant to be
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

The computation is a sparse product (scipy.sparse, float64): the per-(document, token) weights are computed
once, and any block of documents is scored for all queries at once (:meth:`BM25Index.block`), which is how the
``bm25`` baseline scores a training set shard by shard with the statistics (df, avgdl) of the whole set.
"""

from __future__ import annotations

import re
from array import array
from typing import Sequence

import numpy as np
from scipy import sparse

from engine.errors import InputError

K1 = 1.5
B = 0.75

_TOKEN = re.compile(r"[^\W_]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased runs of letters and digits (see the module docstring)."""
    return _TOKEN.findall(text.lower())


def _tokenized(texts: Sequence[str], what: str, offset: int = 0) -> list[list[str]]:
    out = []
    for i, t in enumerate(texts, start=offset):
        if not isinstance(t, str):
            raise InputError(f"{what}[{i}] must be text, got {type(t).__name__}")
        out.append(tokenize(t))
    return out


def _count_rows(rows, n_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR parts ``(indptr, token ids int32, counts float64)`` of ``n_rows`` token-id -> count dicts, built in
    flat buffers (no array per row: a training set has 100k+ of them)."""
    ids, tf, pairs = array("i"), array("d"), np.zeros(n_rows, np.int64)
    for i, counts in enumerate(rows):
        ids.extend(counts)
        tf.extend(counts.values())
        pairs[i] = len(counts)
    return np.concatenate([[0], np.cumsum(pairs)]), np.frombuffer(ids, np.int32), np.frombuffer(tf, np.float64)


class BM25Index:
    """BM25 over a fixed set of documents (the training texts): the sparse matrix of per-(document, token)
    weights ``W[d, t] = idf(t) · tf(t, d) / (tf(t, d) + k1 · (1 - b + b · |d| / avgdl))``, so that
    ``s(q, d) = Σ_t count(t, q) · W[d, t]`` — one sparse product for any block of documents (:meth:`block`).

    Memory: W holds one float64 and one int32 per distinct (document, token) pair (~200 bytes for a short
    document); documents are tokenised a block at a time, so nothing larger than W is held while building.
    """

    def __init__(self, documents: Sequence[str], k1: float = K1, b: float = B, *, block: int = 4096):
        if not (k1 >= 0 and 0 <= b <= 1):
            raise InputError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1!r}, b={b!r}")
        self.vocab: dict[str, int] = {}
        self.n_docs = len(documents)
        lengths = np.zeros(self.n_docs)

        def documents_counts():
            for a in range(0, self.n_docs, block):
                for i, toks in enumerate(_tokenized(documents[a:a + block], "documents", a), start=a):
                    lengths[i] = len(toks)
                    yield self._counts(toks, grow=True)

        indptr, ids, tf = _count_rows(documents_counts(), self.n_docs)
        pairs = np.diff(indptr)
        df = np.bincount(ids, minlength=len(self.vocab))
        idf = np.log1p((self.n_docs - df + 0.5) / (df + 0.5))
        avgdl = lengths.mean() if self.n_docs and lengths.mean() > 0 else 1.0
        norm = np.repeat(k1 * (1 - b + b * lengths / avgdl), pairs)
        self.W = sparse.csr_matrix((idf[ids] * tf / (tf + norm), ids, indptr), shape=(self.n_docs, len(self.vocab)))

    def _counts(self, toks: list[str], grow: bool = False) -> dict[int, int]:
        """Token id -> count over ``toks``, ids ascending; unknown tokens are added (``grow``) or dropped."""
        counts: dict[int, int] = {}
        for t in toks:
            j = self.vocab.setdefault(t, len(self.vocab)) if grow else self.vocab.get(t)
            if j is not None:
                counts[j] = counts.get(j, 0) + 1
        return dict(sorted(counts.items()))

    def queries(self, queries: Sequence[str]) -> sparse.csr_matrix:
        """``[len(queries), V]`` token counts of the queries, with repetition (tokens no document has: dropped)."""
        indptr, ids, tf = _count_rows((self._counts(q) for q in _tokenized(queries, "queries")), len(queries))
        return sparse.csr_matrix((tf, ids, indptr), shape=(len(queries), len(self.vocab)))

    def block(self, Q: sparse.csr_matrix, start: int, stop: int) -> np.ndarray:
        """``[n_queries, stop - start]`` float64 scores of documents ``start:stop`` for :meth:`queries` ``Q``."""
        return np.asarray((Q @ self.W[start:stop].T).todense(), dtype=np.float64).reshape(Q.shape[0], stop - start)

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """``[len(queries), n_docs]`` float64 BM25 scores (larger = more similar)."""
        return self.block(self.queries(queries), 0, self.n_docs)

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
