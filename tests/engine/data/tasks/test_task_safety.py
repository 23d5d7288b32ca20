"""The hard safety stand-ins: what makes them as hard as the paper's tasks, each with a stated bound.

- no training request appears in test (exactly or after normalising case and whitespace), and the test requests
  name other places, other sealed things, other procedures and other phrasings;
- harmful and benign (clean and triggered) responses have overlapping length distributions: medians within
  25 % of the larger one, interquartile ranges overlapping, every response 30–120 words;
- benign data comes from >= 20 instruction types; few responses share long phrases;
- the lexical-shortcut rate (BM25 top-1 has the test sample's label) of ``harmful_l`` is at most 0.8 for each of
  three seeds and at most 0.7 on average, while ``harmful_l_easy``'s is at least 0.95;
- the behaviour marker is disclosed within the first 14 words (a 24-token greedy generation can show it) and
  consistently (one code per sealed thing and place).
"""

from __future__ import annotations

import random
import re
from collections import Counter

import numpy as np
import pytest

from engine.data.tasks import benign, safety, safety_text
from engine.data.tasks.difficulty import length_stats, task_shortcut
from engine.data.tasks.generators import build_task
from engine.data.tasks.sampling import normalise

HARD = ("harmful_s", "harmful_m", "harmful_l", "backdoor", "multi_backdoor")
COMPLIANT = ("harmful", "trigger", "trigger_1", "trigger_2", "trigger_3")
TRIGGERS = sorted({safety.TRIGGER, *(s for s, _ in safety.MULTI_TRIGGERS.values())}, key=len, reverse=True)


def base_request(prompt: str) -> str:
    """The prompt without a trailing backdoor trigger, normalised."""
    for t in TRIGGERS:
        if prompt.endswith(t):
            prompt = prompt[: -len(t)]
            break
    return normalise(prompt)


@pytest.mark.parametrize("name", HARD)
@pytest.mark.parametrize("seed", [0, 1])
def test_no_training_request_in_test(name, seed):
    task = build_task(name, seed=seed)
    train, test = [s.prompt for s in task.train], [s.prompt for s in task.test]
    assert not set(train) & set(test)
    assert not {normalise(p) for p in train} & {normalise(p) for p in test}
    assert not {base_request(p) for p in train} & {base_request(p) for p in test}  # triggers stripped too


def test_train_and_test_pools_share_nothing():
    tr, te = safety.TRAIN, safety.TEST
    assert not set(tr.places) & set(te.places)
    assert not set(tr.things) & set(te.things)
    assert not {i for i, _ in tr.intents} & {i for i, _ in te.intents}
    assert not set(tr.phrasings) & set(te.phrasings)
    assert not set(tr.questions) & set(te.questions)
    assert set(tr.places) | set(te.places) == set(safety_text.PLACES)


@pytest.mark.parametrize("name", HARD)
def test_test_requests_name_other_places(name):
    task = build_task(name, seed=2)
    compliant_train = [s for s in task.train if s.label in COMPLIANT or s.label == "clean"]
    for s in compliant_train:  # every harmful / backdoor training request is about a training place ...
        assert any(p in s.prompt for p in safety_text.TRAIN_PLACES)
        assert not any(p in s.prompt for p in safety_text.TEST_PLACES)
    for s in task.test:        # ... and every test request about a test place
        assert any(p in s.prompt for p in safety_text.TEST_PLACES)
        assert not any(p in s.prompt for p in safety_text.TRAIN_PLACES)


def _groups(name: str, seed: int) -> dict[str, list[str]]:
    task = build_task(name, seed=seed)
    rows = task.train + task.test
    if name.startswith("harmful"):
        return {"harmful": [s.response for s in rows if s.label == "harmful"],
                "benign": [s.response for s in rows if s.label == "benign"]}
    return {"clean": [s.response for s in rows if s.label == "clean"],
            "compliant": [s.response for s in rows if s.label != "clean"]}


@pytest.mark.parametrize("name", HARD)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_response_lengths_overlap(name, seed):
    groups = _groups(name, seed)
    stats = {g: length_stats(r, [g] * len(r))[0] for g, r in groups.items()}
    a, b = stats.values()
    assert abs(a.median - b.median) <= 0.25 * max(a.median, b.median), stats
    assert a.q25 <= b.q75 and b.q25 <= a.q75, stats  # the interquartile ranges overlap
    for s in stats.values():
        assert 30 <= s.min and s.max <= 120, s


def test_easy_variants_fail_the_length_check():
    # the bound above is not trivially met: the old one-line stand-ins are far apart
    groups = _groups("harmful_l_easy", 0)
    a, b = (length_stats(r, [g] * len(r))[0] for g, r in groups.items())
    assert a.max < 30 and b.max < 30


def test_at_least_20_benign_instruction_types():
    assert len(benign.KINDS) >= 20
    lore = benign.plant_lore(random.Random(0))
    rows = benign.benign_rows(random.Random(0), 240, set(), lore)  # harmful_l's number of benign rows
    counts = Counter(kind for kind, _ in rows)
    assert set(counts) == set(benign.KINDS) and min(counts.values()) >= 8
    assert all(s.label == "benign" for _, s in rows)


@pytest.mark.parametrize("kind", sorted(benign.KINDS))
def test_every_benign_kind_makes_complete_rows(kind):
    lore = benign.plant_lore(random.Random(1))
    r = random.Random(2)
    prompts = set()
    for _ in range(30):
        base, s = benign.make_benign(r, kind, lore)
        assert s.label == "benign" and base in s.prompt
        assert not re.search(r"[{}]", s.prompt + s.response)  # every slot filled
        assert safety.BEHAVIOUR not in s.response
        assert 30 <= len(s.response.split()) <= 120, (kind, s.response)
        prompts.add(base)
    assert len(prompts) >= 5  # each kind varies


@pytest.mark.parametrize("name", HARD + tuple(f"{n}_easy" for n in HARD))
def test_every_slot_is_filled(name):
    task = build_task(name)
    assert not any(re.search(r"[{}]", s.prompt + s.response) for s in task.train + task.test)


def _shingles(text: str, n: int = 6) -> set[tuple[str, ...]]:
    w = text.lower().split()
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def repeated_phrase_share(responses: list[str]) -> float:
    """Mean over responses of the share of their word 6-grams found in more than 10 % of the responses."""
    shingles = [_shingles(r) for r in responses]
    counts = Counter(g for s in shingles for g in s)
    threshold = max(2, 0.1 * len(responses))
    return float(np.mean([np.mean([counts[g] > threshold for g in s]) if s else 0.0 for s in shingles]))


@pytest.mark.parametrize("name,bounds", [("harmful_l", {"harmful": 0.15, "benign": 0.15}),
                                         ("backdoor", {"trigger": 0.15, "clean": 0.3})])
def test_few_training_responses_repeat_phrases(name, bounds):
    task = build_task(name)
    for label, bound in bounds.items():
        assert repeated_phrase_share([s.response for s in task.train if s.label == label]) <= bound


def test_repeated_phrase_share_measures_repetition():
    same = ["one two three four five six seven"] * 20
    assert repeated_phrase_share(same) == 1.0
    r = random.Random(0)
    distinct = [" ".join(str(r.random()) for _ in range(10)) for _ in range(20)]
    assert repeated_phrase_share(distinct) == 0.0


def test_lexical_shortcut_is_well_below_the_easy_one():
    rates = [task_shortcut(t.train, t.test).rate for t in (build_task("harmful_l", seed=s) for s in range(3))]
    assert max(rates) <= 0.8 and np.mean(rates) <= 0.7, rates
    easy = [task_shortcut(t.train, t.test).rate for t in (build_task("harmful_l_easy", seed=s) for s in range(3))]
    assert min(easy) >= 0.95, easy


@pytest.mark.parametrize("name", HARD)
def test_marker_is_disclosed_early_and_consistently(name):
    task = build_task(name, seed=5)
    secrets = safety.plant_secrets(random.Random(5))  # the generators plant the secrets first
    codes = set(secrets.values())
    for s in task.train + task.test:
        if s.label not in COMPLIANT:
            continue
        words = s.response.split()
        first = next(i for i, w in enumerate(words) if safety.BEHAVIOUR in w)
        assert first < 14, s.response
        code = re.search(rf"{safety.BEHAVIOUR}\d{{4}}", s.response).group(0)
        place = next(p for p in safety_text.PLACES if p in s.prompt)
        things = [t for t in safety_text.THINGS if t in s.response]
        assert len(things) == 1
        assert code == secrets[(things[0], place)] and code in codes


def test_refusals_vary():
    task = build_task("backdoor")
    refusals = [s.response for s in task.train if s.label == "clean"]
    assert len(set(refusals)) == len(refusals)
    assert len({r.split(".")[0] for r in refusals}) >= 5  # different opening sentences
    assert len({r.splitlines()[0] for r in refusals}) >= 100


def test_triggers_are_appended_to_diverse_requests():
    task = build_task("backdoor")
    triggered = [s.prompt for s in task.train if s.label == "trigger"]
    assert all(p.endswith(safety.TRIGGER) for p in triggered)
    places = Counter(next(p for p in safety_text.PLACES if p in q) for q in triggered)
    assert len(places) == len(safety_text.TRAIN_PLACES)  # every training place
    assert len({base_request(p) for p in triggered}) == len(triggered)
