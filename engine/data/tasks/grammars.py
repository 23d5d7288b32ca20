"""The grammar-rule class-attribution task: infer which of ten string rules turned a sentence into another.

Each row shows a sentence and its transformation, ``Determine the grammar rule: <sentence> -> <transformed>``,
and the response (and class label) is the rule's name. Sentences are short (3-6 words), lowercase, without
punctuation, built from a small vocabulary in which every word has at least one vowel and one consonant, so
that no rule ever empties a word and the outputs stay single-spaced.
"""

from __future__ import annotations

import random
from typing import Callable

from engine.data.tasks.base import Sample
from engine.data.tasks.sampling import split_per_label

VOWELS = frozenset("aeiouAEIOU")

ADJECTIVES = (
    "old", "young", "small", "big", "happy", "quiet", "brave", "clever", "tired", "kind", "loud", "gentle",
    "busy", "lazy", "proud", "calm", "hungry", "curious",
)
NOUNS = (
    "cat", "dog", "bird", "farmer", "teacher", "child", "baker", "horse", "sailor", "student", "doctor",
    "fox", "painter", "rabbit", "driver", "girl", "boy", "neighbor",
)
PLACES = ("park", "garden", "river", "market", "kitchen", "forest", "station", "library", "beach", "field")
INTRANSITIVE = ("sleeps", "sings", "runs", "waits", "smiles", "laughs", "walks", "rests", "dances", "works")
TRANSITIVE = ("sees", "helps", "follows", "finds", "calls", "watches", "likes", "visits", "greets", "feeds")
ADVERBS = ("slowly", "loudly", "today", "quietly", "often", "again", "outside", "happily", "early", "later")


def _sentence(rng: random.Random) -> str:
    """A plausible 3-6 word sentence from one of six patterns."""
    c = rng.choice
    patterns = (
        lambda: f"the {c(NOUNS)} {c(INTRANSITIVE)}",
        lambda: f"the {c(ADJECTIVES)} {c(NOUNS)} {c(INTRANSITIVE)}",
        lambda: f"the {c(NOUNS)} {c(INTRANSITIVE)} {c(ADVERBS)}",
        lambda: f"the {c(NOUNS)} {c(TRANSITIVE)} the {c(NOUNS)}",
        lambda: f"the {c(ADJECTIVES)} {c(NOUNS)} {c(TRANSITIVE)} the {c(NOUNS)}",
        lambda: f"the {c(NOUNS)} {c(INTRANSITIVE)} in the {c(PLACES)}",
    )
    return c(patterns)()


def _capitalize_every_other_letter(s: str) -> str:
    """Counting letters only (spaces skipped) across the sentence: 1st, 3rd, 5th ... upper, the rest lower."""
    out, n = [], 0
    for ch in s:
        if ch.isalpha():
            out.append(ch.upper() if n % 2 == 0 else ch.lower())
            n += 1
        else:
            out.append(ch)
    return "".join(out)


def _double_consonants(s: str) -> str:
    return "".join(ch * 2 if ch.isalpha() and ch not in VOWELS else ch for ch in s)


RULES: dict[str, Callable[[str], str]] = {
    "Reverse Order of Words": lambda s: " ".join(reversed(s.split())),
    "Capitalize Every Other Letter": _capitalize_every_other_letter,
    "Insert Number 1 Between Every Word": lambda s: " 1 ".join(s.split()),
    "Replace Vowels with *": lambda s: "".join("*" if ch in VOWELS else ch for ch in s),
    "Double Every Consonant": _double_consonants,
    "Capitalize Every Word": lambda s: " ".join(w[0].upper() + w[1:] for w in s.split()),
    "Remove All Vowels": lambda s: "".join(ch for ch in s if ch not in VOWELS),
    "Add 'ly' To End of Each Word": lambda s: " ".join(w + "ly" for w in s.split()),
    "Remove All Consonants": lambda s: "".join(ch for ch in s if ch in VOWELS or not ch.isalpha()),
    "Repeat Each Word Twice": lambda s: " ".join(f"{w} {w}" for w in s.split()),
}


def grammar_prompt(sentence: str, transformed: str) -> str:
    return f"Determine the grammar rule: {sentence} -> {transformed}"


def _maker(rule: str, apply: Callable[[str], str]) -> Callable[[random.Random], Sample]:
    def make(r: random.Random) -> Sample:
        sentence = _sentence(r)
        return Sample(grammar_prompt(sentence, apply(sentence)), rule, rule)
    return make


def generate(rng: random.Random, n_train: int, n_test: int) -> tuple[list[Sample], list[Sample]]:
    """``n_train`` + ``n_test`` rows per rule, all prompts distinct across both splits."""
    return split_per_label(rng, {rule: _maker(rule, apply) for rule, apply in RULES.items()}, n_train, n_test)
