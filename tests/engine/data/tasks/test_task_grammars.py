"""The ten grammar rules, each checked against a hand-written expectation, and the generated rows."""

from __future__ import annotations

import re

import pytest

from engine.data.tasks import grammars
from engine.data.tasks.generators import build_task

SENTENCE = "the old cat sees the dog"
EXPECTED = {
    "Reverse Order of Words": "dog the sees cat old the",
    "Capitalize Every Other Letter": "ThE oLd CaT sEeS tHe DoG",
    "Insert Number 1 Between Every Word": "the 1 old 1 cat 1 sees 1 the 1 dog",
    "Replace Vowels with *": "th* *ld c*t s**s th* d*g",
    "Double Every Consonant": "tthhe olldd ccatt sseess tthhe ddogg",
    "Capitalize Every Word": "The Old Cat Sees The Dog",
    "Remove All Vowels": "th ld ct ss th dg",
    "Add 'ly' To End of Each Word": "thely oldly catly seesly thely dogly",
    "Remove All Consonants": "e o a ee e o",
    "Repeat Each Word Twice": "the the old old cat cat sees sees the the dog dog",
}


def test_rule_names_are_the_papers():
    assert list(grammars.RULES) == list(EXPECTED)


@pytest.mark.parametrize("rule", list(EXPECTED))
def test_rule_on_fixed_sentence(rule):
    assert grammars.RULES[rule](SENTENCE) == EXPECTED[rule]


def test_every_word_has_a_vowel_and_a_consonant():
    words = {"the", "in", *grammars.ADJECTIVES, *grammars.NOUNS, *grammars.PLACES, *grammars.INTRANSITIVE,
             *grammars.TRANSITIVE, *grammars.ADVERBS}
    for w in words:
        assert w.isalpha() and w.islower(), w
        assert set(w) & set("aeiou") and set(w) - set("aeiou"), w


def test_generated_rows_apply_their_rule():
    task = build_task("grammars", seed=5)
    pattern = re.compile(r"^Determine the grammar rule: (.+) -> (.+)$")
    for s in task.train + task.test:
        sentence, transformed = pattern.match(s.prompt).groups()
        assert 3 <= len(sentence.split()) <= 6
        assert s.response == s.label
        assert grammars.RULES[s.label](sentence) == transformed
