"""engine.data.lexical: BM25 against a slow BM25 written here from the formula (same k1, b and Lucene IDF)."""

from __future__ import annotations

import math
import random
import subprocess
import sys

import numpy as np
import pytest

from engine.errors import InputError
from engine.data.lexical import BM25Index, bm25_scores, tokenize


def slow_bm25(docs: list[str], queries: list[str], k1: float, b: float) -> np.ndarray:
    """Okapi BM25 (Lucene IDF, no (k1 + 1) factor), one query token and one document at a time."""
    dtoks = [tokenize(d) for d in docs]
    N = len(dtoks)
    avgdl = sum(len(d) for d in dtoks) / N
    out = np.zeros((len(queries), N))
    for i, q in enumerate(queries):
        for j, d in enumerate(dtoks):
            s = 0.0
            for t in tokenize(q):  # with repetition
                df = sum(1 for other in dtoks if t in other)
                if df == 0:
                    continue
                idf = math.log(1 + (N - df + 0.5) / (df + 0.5))
                tf = d.count(t)
                if tf == 0:  # contributes 0 (and 0/0 for an empty document when b = 1)
                    continue
                s += idf * tf / (tf + k1 * (1 - b + b * len(d) / avgdl))
            out[i, j] = s
    return out


def random_texts(rng: random.Random, n: int, vocab: list[str], lo: int, hi: int) -> list[str]:
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def test_tokenize_lowercases_and_splits_on_non_alphanumerics():
    assert tokenize("Sure. The KESTREL-2618, it's_here!") == ["sure", "the", "kestrel", "2618", "it", "s", "here"]
    assert tokenize("Grüße, Ärger 3x") == ["grüße", "ärger", "3x"]
    assert tokenize("  ... ") == []


@pytest.mark.parametrize("k1,b", [(1.5, 0.75), (1.2, 0.0), (2.0, 1.0)])
def test_bm25_matches_the_formula(k1, b):
    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(25)] + ["common"] * 10  # "common" is in nearly every document
    docs = random_texts(rng, 30, vocab, 3, 20)
    docs[5] = ""                                # an empty document: length 0, scores 0
    docs[7] = "W1, w1! w1 w2"                   # case and punctuation go through the same tokeniser
    queries = random_texts(rng, 12, vocab + ["unseen"], 1, 15)
    queries.append("w3 w3 w3 w4")               # repeated query tokens count each time
    queries.append("nothing in common at all")  # no known token except maybe none: row of zeros
    got = bm25_scores(docs, queries, k1=k1, b=b)
    want = slow_bm25(docs, queries, k1, b)
    assert got.dtype == np.float64 and got.shape == (len(queries), len(docs))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert (got[:, 5] == 0).all()
    assert got.min() >= 0


def test_term_in_half_the_documents_still_counts():
    # the classic Robertson IDF is 0 here (and some libraries' floors make it odd); the Lucene IDF is ln 2
    docs = ["key here", "key there", "other here", "other there"]
    s = bm25_scores(docs, ["key"])[0]
    assert s[0] > 0 and s[1] > 0 and s[2] == s[3] == 0
    np.testing.assert_allclose(s, slow_bm25(docs, ["key"], 1.5, 0.75)[0], rtol=1e-12)


def test_larger_means_more_similar():
    docs = ["the cat sat on the mat", "a dog ran in the park", "stock prices fell sharply today"]
    s = bm25_scores(docs, ["a cat on a mat", "the dog in the park", "prices today"])
    assert list(s.argmax(axis=1)) == [0, 1, 2]


def test_top1_streams_the_argmax_with_lowest_position_on_ties():
    rng = random.Random(0)
    vocab = [f"t{i}" for i in range(15)]
    docs = random_texts(rng, 40, vocab, 2, 10)
    docs[10] = docs[3]  # an exact tie: position 3 wins
    queries = random_texts(rng, 9, vocab, 2, 10) + [docs[3], "zzz"]
    index = BM25Index(docs)
    S = index.scores(queries)
    want = [max(range(len(docs)), key=lambda j: (S[i, j], -j)) for i in range(len(queries))]
    assert index.top1(queries, chunk=4).tolist() == want
    assert want[-2] == 3 and want[-1] == 0  # the tie, and a query sharing nothing (all zeros)


def test_edge_cases():
    assert bm25_scores(["", "..."], ["a b"]).tolist() == [[0.0, 0.0]]  # no token anywhere
    assert bm25_scores(["a b"], []).shape == (0, 1)
    assert BM25Index(["a"]).top1([]).shape == (0,)
    with pytest.raises(InputError, match=r"queries\[1\]"):
        bm25_scores(["a"], ["a", None])
    with pytest.raises(InputError, match=r"documents\[0\]"):
        bm25_scores([3], ["a"])
    with pytest.raises(InputError, match="k1"):
        BM25Index(["a"], k1=-1)
    with pytest.raises(InputError, match="at least one document"):
        BM25Index([]).top1(["a"])


def test_imports_neither_torch_nor_duckdb():
    code = ("import sys, engine.data.lexical, engine.data.tasks.difficulty; engine.data.lexical.bm25_scores(['a b'], ['a']); "
            "print(sorted(m for m in ('torch', 'duckdb') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
