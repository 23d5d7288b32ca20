"""The BM25 baseline scores test texts against training texts with Okapi BM25 (Lucene form), checked against the
formula written out in a loop."""

import math
from collections import Counter

import numpy as np
import pytest

from engine.data.tasks.difficulty import sample_text
from engine.errors import InputError
from engine.features.types import Features
from engine.scoring.methods import get_method, score_in_shards

TRAIN = ["the vault code is KESTREL", "refuse: I cannot reveal the code", "the weather is sunny today",
         "a recipe for bread and the oven", "sunny sunny weather"]
TEST = ["what is the vault code", "is the weather sunny", "nothing in common xyz"]


def _tokens(text):
    out, word = [], ""
    for ch in text.lower() + " ":
        if ch.isalnum():
            word += ch
        elif word:
            out.append(word)
            word = ""
    return out


def _reference(train, test, k1=1.5, b=0.75):
    docs = [_tokens(t) for t in train]
    N, avgdl = len(docs), sum(map(len, docs)) / len(docs)
    df = Counter(w for d in docs for w in set(d))
    S = np.zeros((len(test), N))
    for j, q in enumerate(test):
        for i, d in enumerate(docs):
            tf = Counter(d)
            for w in _tokens(q):
                if tf[w]:
                    idf = math.log(1 + (N - df[w] + 0.5) / (df[w] + 0.5))
                    S[j, i] += idf * tf[w] / (tf[w] + k1 * (1 - b + b * len(d) / avgdl))
    return S


def test_scores_equal_the_formula_and_do_not_depend_on_shards():
    train, test = Features(texts=tuple(TRAIN)), Features(texts=tuple(TEST))
    S = get_method("bm25")(train, test)
    np.testing.assert_allclose(S, _reference(TRAIN, TEST), rtol=1e-9, atol=1e-12)
    assert S.argmax(1)[0] == 0 and S.argmax(1)[1] == 2 and (S[2] == 0).all()
    blocks = [blk for _, _, blk in score_in_shards("bm25", train, test, 2)]
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), S)
    np.testing.assert_allclose(get_method("bm25")(train, test, k1=0.5, b=0.0), _reference(TRAIN, TEST, 0.5, 0.0),
                               rtol=1e-9, atol=1e-12)


def test_text_is_prompt_and_response():
    assert sample_text("a question", "an answer") == "a question\nan answer"


def test_missing_texts_and_bad_parameters_are_refused():
    with pytest.raises(InputError, match="bm25 needs the texts"):
        get_method("bm25")(Features(size=3), Features(texts=("a",)))
    with pytest.raises(InputError, match="'b' must be <= 1.0"):
        get_method("bm25").make_params(b=1.5)
    with pytest.raises(InputError, match="'k1' must be >= 0.0"):
        get_method("bm25").make_params(k1=-1)
