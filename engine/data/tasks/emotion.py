"""The emotion class-attribution task: name the emotion a generated sentence expresses (five labels).

A sentence is ``<subject> <reaction> <cause>.``, where the reaction and cause come from the label's own
vocabulary, so the label is recoverable from the words while the subjects are shared by all labels.
"""

from __future__ import annotations

import random
from typing import Callable

from engine.data.tasks.base import Sample
from engine.data.tasks.sampling import split_per_label

SUBJECTS = (
    "My sister", "The old man", "Our teacher", "The little boy", "My neighbor", "The young woman", "My best friend",
    "The farmer", "Her brother", "The new student", "My grandmother", "The driver",
)

VOCAB: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "joy": (
        ("laughed with delight", "smiled from ear to ear", "felt on top of the world", "danced around the room",
         "was overjoyed", "beamed with happiness", "cheered loudly", "could not stop grinning"),
        ("when the good news arrived", "after winning the prize", "at the sight of the puppy",
         "because the holidays had begun", "when the whole family came home", "after passing the exam",
         "when the sun finally came out", "at the surprise birthday cake"),
    ),
    "sadness": (
        ("cried quietly", "felt a heavy ache inside", "stared out of the window in tears", "sighed with sorrow",
         "felt completely alone", "could not stop weeping", "was heartbroken", "lost all hope"),
        ("after the old dog passed away", "when the best friend moved far away", "as the last letter was read",
         "after the long goodbye at the station", "when the garden was destroyed", "after the team was broken up",
         "when nobody came to the party", "as the rain kept falling all week"),
    ),
    "anger": (
        ("slammed the door", "shouted in fury", "clenched both fists", "was boiling with rage",
         "stormed out of the room", "glared furiously", "banged on the table", "was livid"),
        ("after being lied to again", "when the bike was stolen", "because the promise was broken",
         "after waiting three hours for nothing", "when someone cut in line", "after the unfair decision",
         "when the work was taken without credit", "because the neighbors kept ignoring the complaints"),
    ),
    "fear": (
        ("trembled all over", "froze in terror", "held their breath in panic", "felt their heart pounding",
         "hid under the blanket", "screamed in fright", "could not stop shaking", "backed away slowly"),
        ("when the lights went out", "at the footsteps behind them", "as the storm shook the house",
         "when the growling came closer", "at the shadow in the hallway", "as the bridge began to sway",
         "when the strange noise started again", "in the dark empty forest"),
    ),
    "surprise": (
        ("gasped in astonishment", "could not believe their eyes", "was completely stunned", "jumped back in shock",
         "stood there with mouth wide open", "blinked in disbelief", "was caught off guard", "stopped in amazement"),
        ("when the long-lost cousin appeared at the door", "at the sudden announcement",
         "when the magician pulled out a dove", "at the unexpected result", "when the quiet boy won the race",
         "at the snow falling in summer", "when the package turned out to be a puppy",
         "at the news nobody saw coming"),
    ),
}


def emotion_prompt(sentence: str) -> str:
    return f"What emotion does this sentence express? {sentence}"


def _maker(label: str) -> Callable[[random.Random], Sample]:
    reactions, causes = VOCAB[label]

    def make(r: random.Random) -> Sample:
        sentence = f"{r.choice(SUBJECTS)} {r.choice(reactions)} {r.choice(causes)}."
        return Sample(emotion_prompt(sentence), label, label)
    return make


def generate(rng: random.Random, n_train: int, n_test: int) -> tuple[list[Sample], list[Sample]]:
    """``n_train`` + ``n_test`` rows per emotion, all prompts distinct across both splits."""
    return split_per_label(rng, {label: _maker(label) for label in VOCAB}, n_train, n_test)
