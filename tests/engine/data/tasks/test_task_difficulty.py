"""engine.data.tasks.difficulty against loops written here: length quartiles by the interpolation formula, the
lexical-shortcut rate by an explicit argmax per test sample."""

from __future__ import annotations

import random

import numpy as np
import pytest

from engine.errors import InputError
from engine.data.lexical import bm25_scores
from engine.data.tasks.base import Sample
from engine.data.tasks.difficulty import length_stats, lexical_shortcut, sample_text, task_shortcut, word_count
from engine.data.tasks.generators import build_task


def quantile(xs: list[int], q: float) -> float:
    """Linear interpolation between the order statistics at position q * (n - 1)."""
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


def test_word_count_splits_on_whitespace():
    assert word_count("Sure. The code is KESTREL-2618,\n1. Bow  twice.") == 8
    assert word_count("   ") == 0


def test_length_stats_match_a_loop():
    r = random.Random(0)
    labels = [r.choice("abc") for _ in range(57)]
    responses = [" ".join("w" for _ in range(r.randint(1, 40))) for _ in labels]
    got = {s.label: s for s in length_stats(responses, labels)}
    assert list(got) == ["a", "b", "c"]
    for lab, s in got.items():
        xs = [len(t.split()) for t, l in zip(responses, labels) if l == lab]
        assert s.n == len(xs) and s.min == min(xs) and s.max == max(xs)
        assert s.mean == pytest.approx(sum(xs) / len(xs))
        assert s.q25 == pytest.approx(quantile(xs, 0.25))
        assert s.median == pytest.approx(quantile(xs, 0.5))
        assert s.q75 == pytest.approx(quantile(xs, 0.75))


def test_shortcut_matches_a_loop_over_test_samples():
    task = build_task("harmful_m", seed=3, n_train_per_label=8, n_test_per_label=12)
    tr = [sample_text(s.prompt, s.response) for s in task.train]
    te = [sample_text(s.prompt, s.response) for s in task.test]
    S = bm25_scores(tr, te)
    hits, chance = 0, 0.0
    for i, t in enumerate(task.test):
        best = 0
        for j in range(len(tr)):  # the highest score, the lowest position on ties
            if S[i, j] > S[i, best]:
                best = j
        hits += task.train[best].label == t.label
        chance += sum(s.label == t.label for s in task.train) / len(task.train)
    got = task_shortcut(task.train, task.test)
    assert got.rate == pytest.approx(hits / len(te))
    assert got.chance == pytest.approx(chance / len(te))
    assert got.chance == pytest.approx(0.25)  # 8 harmful among 32 training samples, every test sample harmful


def test_shortcut_is_one_when_test_copies_training_text_and_zero_when_labels_swap():
    train = [Sample(f"question about {w}", f"answer about {w} {w}", lab)
             for w, lab in [("apples", "x"), ("boats", "y"), ("clouds", "x"), ("drums", "y")]]
    same = [Sample(s.prompt, s.response, s.label) for s in train]
    swapped = [Sample(s.prompt, s.response, "y" if s.label == "x" else "x") for s in train]
    assert task_shortcut(train, same).rate == 1.0
    assert task_shortcut(train, swapped).rate == 0.0
    assert task_shortcut(train, same).top1.tolist() == [0, 1, 2, 3]


def test_shortcut_rejects_bad_input():
    with pytest.raises(InputError, match="one label per text"):
        lexical_shortcut(["a"], ["x", "y"], ["a"], ["x"])
    with pytest.raises(InputError, match="at least one"):
        lexical_shortcut([], [], ["a"], ["x"])
    with pytest.raises(InputError, match="labels"):
        length_stats(["a b"], [])


def test_old_stand_ins_are_lexically_trivial():
    # the finding, as a regression check: word overlap alone finds the class of every easy test prompt
    for name in ("harmful_l_easy", "backdoor_easy"):
        task = build_task(name, seed=0)
        assert task_shortcut(task.train, task.test).rate == 1.0
    assert np.isfinite(task_shortcut(task.train, task.test).chance)
