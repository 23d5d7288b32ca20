"""Request phrasings and answer shapes shared by the harmful stand-ins and the benign instructions.

The harmful-data tasks are hard for word-overlap methods only if a harmful row and a benign row cannot be
told apart by their form: both classes ask with the same phrasings and answer with the same openers, numbered
lists or paragraphs, and closing lines, drawn from the pools below. Harmful *training* requests use
:data:`TRAIN_PHRASINGS`, harmful *test* requests :data:`TEST_PHRASINGS` (disjoint, as the paper's test prompts
are other AdvBench prompts); benign requests use both, as Alpaca shares phrasings with AdvBench.
"""

from __future__ import annotations

import random
from typing import Sequence

# "{task}" is a verb phrase ("repot a small houseplant").
TRAIN_PHRASINGS = (
    "Explain how to {task}.",
    "Tell me how to {task}.",
    "How do I {task}?",
    "Give me step-by-step instructions to {task}.",
    "What is the best way to {task}?",
    "Write a short guide on how to {task}.",
    "I need to {task}. What should I do?",
    "Can you show me how to {task}?",
    "List the steps to {task}.",
    "Teach me how to {task}.",
    "What steps should I follow to {task}?",
    "Help me {task}.",
)
TEST_PHRASINGS = (
    "Walk me through how to {task}.",
    "Describe the steps to {task}.",
    "How would someone {task}?",
    "Create a tutorial on how to {task}.",
    "Outline a plan to {task}.",
    "What do I have to do to {task}?",
    "Provide instructions for how to {task}.",
    "I want to {task}. Where do I start?",
    "Show me a method to {task}.",
    "Is there a simple way to {task}?",
)
ALL_PHRASINGS = TRAIN_PHRASINGS + TEST_PHRASINGS

# Prompt decorations for every class ("" most often).
PREFIXES = ("", "", "", "", "Hi! ", "Quick question. ", "Hello there. ", "Good morning. ")
SUFFIXES = ("", "", "", "", " Keep it short.", " Please be specific.", " Thanks!", " I'm a beginner.",
            " Thank you in advance.")

# Openers of a numbered answer; "{task}" as above.
STEP_OPENERS = (
    "Sure, here is how to {task}:",
    "Here are the steps to {task}:",
    "Of course. To {task}, follow these steps:",
    "Happy to help. This is how you {task}:",
    "Certainly! A simple way to {task}:",
    "Follow these steps to {task}:",
    "Here is a short guide to {task}:",
    "No problem. To {task}, do this:",
    "Good question. To {task}:",
    "It is easier than it looks. To {task}:",
)
# Openers of a paragraph answer about doing something.
PARAGRAPH_OPENERS = (
    "To {task}, start early and go step by step.",
    "Here is how to {task}.",
    "Sure. To {task}, you only need a little patience.",
    "Of course. The usual way to {task} is simple.",
    "Happy to explain how to {task}.",
    "It takes a few minutes to {task}.",
)
# Connectors that turn steps into a paragraph.
CONNECTORS = ("First,", "Then", "Next,", "After that,", "Once that is done,", "Finally,")
# Closing lines of a procedure.
CLOSERS = (
    "That's it; take your time with each step.",
    "Follow the steps in order and you should be done in a few minutes.",
    "If something goes wrong, start again from the first step.",
    "Let me know if you want more detail on any step.",
    "With a little practice it becomes routine.",
    "Take a short break if you feel rushed.",
    "Good luck, and enjoy the result.",
    "Check your work once more before you finish.",
    "",
    "",
)
# Closing lines of any other answer.
GENERAL_CLOSERS = ("Hope this helps!", "Let me know if you want more ideas.", "Enjoy!", "I hope that is useful.",
                   "Tell me if you'd like a longer version.", "", "")


def lower_first(s: str) -> str:
    """``"Wait until ..."`` -> ``"wait until ..."`` (for joining steps into a sentence)."""
    return s[:1].lower() + s[1:] if s[:1].isupper() and not s[1:2].isupper() else s


def decorate(r: random.Random, prompt: str) -> str:
    """An optional greeting before and remark after the request."""
    return f"{r.choice(PREFIXES)}{prompt}{r.choice(SUFFIXES)}"


def numbered(opener: str, steps: Sequence[str], closer: str = "") -> str:
    """``opener`` then ``1. step`` lines, then ``closer`` (omitted when empty)."""
    lines = [opener] + [f"{i}. {s}" for i, s in enumerate(steps, 1)]
    return "\n".join(lines + ([closer] if closer else []))


def as_paragraph(r: random.Random, opener: str, steps: Sequence[str], closer: str = "") -> str:
    """The steps joined into one paragraph with connectors ("First, ... Then ... Finally, ...")."""
    n = len(steps)
    words = []
    for i, step in enumerate(steps):
        if i == 0:
            c = "First,"
        elif i == n - 1:
            c = "Finally,"
        else:
            c = r.choice(CONNECTORS[1:5])
        words.append(f"{c} {lower_first(step)}")
    return " ".join([opener, *words] + ([closer] if closer else []))


def ordered_subset(r: random.Random, items: Sequence[str], lo: int, hi: int) -> list[str]:
    """Between ``lo`` and ``hi`` of ``items``, keeping their order (steps of a procedure)."""
    k = r.randint(min(lo, len(items)), min(hi, len(items)))
    keep = sorted(r.sample(range(len(items)), k))
    return [items[i] for i in keep]
