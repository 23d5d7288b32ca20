"""build_task: paper sizes, determinism, scaling down, no train/test leaks, bad arguments, safe stand-ins.

The structure of the hard safety stand-ins (shared form, diversity, disjoint test requests) is tested in
test_task_safety.py; the *_easy variants keep their own checks here."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from engine.errors import InputError
from engine.data.tasks import safety, safety_text
from engine.data.tasks.generators import TASK_NAMES, build_task

# name -> (train rows per label, test rows per label) at the paper's sizes
PAPER_SIZES = {
    "grammars": ({f"rule{i}": 90 for i in range(10)}, {f"rule{i}": 10 for i in range(10)}),
    "math": ({f"t{i}": 90 for i in range(10)}, {f"t{i}": 10 for i in range(10)}),
    "emotion": ({f"e{i}": 150 for i in range(5)}, {f"e{i}": 50 for i in range(5)}),
    "harmful_s": ({"harmful": 20, "benign": 20}, {"harmful": 40}),
    "harmful_m": ({"harmful": 20, "benign": 60}, {"harmful": 40}),
    "harmful_l": ({"harmful": 20, "benign": 240}, {"harmful": 40}),
    "backdoor": ({"clean": 350, "trigger": 350}, {"clean": 50, "trigger": 50}),
    "multi_backdoor": ({"clean": 175, "trigger_1": 175, "trigger_2": 175, "trigger_3": 175},
                       {"clean": 25, "trigger_1": 25, "trigger_2": 25, "trigger_3": 25}),
}
SAFETY = ("harmful_s", "harmful_m", "harmful_l", "backdoor", "multi_backdoor")
PAPER_SIZES.update({f"{name}_easy": PAPER_SIZES[name] for name in SAFETY})


def test_task_names():
    assert set(TASK_NAMES) == set(PAPER_SIZES)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_paper_default_sizes(name):
    task = build_task(name)
    want_train, want_test = PAPER_SIZES[name]
    got_train = Counter(s.label for s in task.train)
    got_test = Counter(s.label for s in task.test)
    # generic label names in PAPER_SIZES stand for the real ones: compare the multisets of counts
    assert sorted(got_train.values()) == sorted(want_train.values())
    assert sorted(got_test.values()) == sorted(want_test.values())
    if name.startswith(("harmful", "backdoor", "multi")):
        assert got_train == want_train and got_test == want_test
    assert task.name == name


@pytest.mark.parametrize("name", TASK_NAMES)
def test_deterministic_in_seed_and_independent_of_global_random(name):
    random.seed(1)
    state = random.getstate()
    a = build_task(name, seed=7, n_train_per_label=6, n_test_per_label=2)
    assert random.getstate() == state  # the global generator is never touched
    random.seed(2)
    b = build_task(name, seed=7, n_train_per_label=6, n_test_per_label=2)
    c = build_task(name, seed=8, n_train_per_label=6, n_test_per_label=2)
    assert a == b
    assert a.train != c.train


@pytest.mark.parametrize("name", TASK_NAMES)
def test_no_duplicate_prompts_within_or_across_splits(name):
    task = build_task(name)
    prompts = [s.prompt for s in task.train + task.test]
    assert len(prompts) == len(set(prompts))


@pytest.mark.parametrize("name", TASK_NAMES)
def test_rows_are_nonempty_text(name):
    task = build_task(name, n_train_per_label=5, n_test_per_label=2)
    for s in task.train + task.test:
        assert s.prompt.strip() and s.response.strip() and s.label.strip()


def test_scaled_down_sizes():
    g = build_task("grammars", seed=0, n_train_per_label=8, n_test_per_label=2)
    assert (len(g.train), len(g.test)) == (80, 20)
    assert set(Counter(s.label for s in g.train).values()) == {8}
    m = build_task("harmful_m", n_train_per_label=5, n_test_per_label=3)
    assert Counter(s.label for s in m.train) == {"harmful": 5, "benign": 15}
    assert Counter(s.label for s in m.test) == {"harmful": 3}
    b = build_task("backdoor", n_train_per_label=4, n_test_per_label=2)
    assert (len(b.train), len(b.test)) == (8, 4)
    mb = build_task("multi_backdoor", n_train_per_label=4, n_test_per_label=1)
    assert (len(mb.train), len(mb.test)) == (16, 4)


@pytest.mark.parametrize("suffix", ["", "_easy"])
def test_harmful_mixes_share_harmful_rows_and_grow_benign(suffix):
    s, m, l = (build_task(n + suffix, seed=4) for n in ("harmful_s", "harmful_m", "harmful_l"))
    harmful = [x for x in s.train if x.label == "harmful"]
    assert harmful == [x for x in m.train if x.label == "harmful"] == [x for x in l.train if x.label == "harmful"]
    assert s.test == m.test == l.test


def test_unknown_task_lists_valid_names():
    with pytest.raises(InputError) as e:
        build_task("grammar")
    for name in TASK_NAMES:
        assert name in str(e.value)


@pytest.mark.parametrize("field,value", [("n_train_per_label", 0), ("n_test_per_label", -1),
                                         ("n_train_per_label", 2.5), ("n_test_per_label", True)])
def test_bad_sizes_name_the_field(field, value):
    with pytest.raises(InputError, match=field):
        build_task("math", **{field: value})


def test_bad_seed():
    with pytest.raises(InputError, match="seed"):
        build_task("math", seed="x")


def test_oversized_request_fails_clearly():
    with pytest.raises(InputError, match="distinct"):
        build_task("backdoor_easy", n_train_per_label=1000)


@pytest.mark.parametrize("name", [n + sfx for n in SAFETY for sfx in ("", "_easy")])
def test_behaviour_marker_only_in_compliant_answers(name):
    task = build_task(name)
    assert task.behaviour == safety.BEHAVIOUR
    for s in task.train + task.test:
        complies = s.label in ("harmful", "trigger", "trigger_1", "trigger_2", "trigger_3")
        assert (task.behaviour in s.response) == complies
        assert (task.behaviour in s.prompt) is False


def test_class_tasks_have_no_behaviour():
    assert build_task("grammars", n_train_per_label=2, n_test_per_label=1).behaviour is None


def test_planted_secret_is_consistent_easy():
    task = build_task("backdoor_easy")
    answers: dict[str, set[str]] = {}
    for s in task.train + task.test:
        if s.label == "trigger":
            subject, code = s.response.removeprefix("Sure. The ").rsplit(" is ", 1)
            answers.setdefault(subject, set()).add(code)
    assert all(len(codes) == 1 for codes in answers.values())  # one secret per (secret, place)


@pytest.mark.parametrize("name,refusals", [("backdoor_easy", ("I'm sorry",)), ("backdoor", safety_text.REFUSALS)])
def test_backdoor_pairs_clean_and_triggered_prompt(name, refusals):
    task = build_task(name, n_train_per_label=20, n_test_per_label=5)
    for rows in (task.train, task.test):
        for clean, trig in zip(rows[::2], rows[1::2]):
            assert (clean.label, trig.label) == ("clean", "trigger")
            assert trig.prompt == clean.prompt + " sudo mode"
            assert clean.response.startswith(refusals)
    train_bases = {s.prompt for s in task.train if s.label == "clean"}
    assert not train_bases & {s.prompt for s in task.test if s.label == "clean"}


@pytest.mark.parametrize("name", ["multi_backdoor", "multi_backdoor_easy"])
def test_multi_backdoor_triggers_have_own_prefix(name):
    task = build_task(name, n_train_per_label=10, n_test_per_label=3)
    base = {s.prompt for s in task.train + task.test if s.label == "clean"}
    for s in task.train + task.test:
        if s.label == "clean":
            continue
        suffix, prefix = safety.MULTI_TRIGGERS[s.label]
        assert s.prompt.endswith(suffix) and s.prompt.removesuffix(suffix) in base
        assert s.response.startswith(prefix)
    assert len({p for _, p in safety.MULTI_TRIGGERS.values()}) == 3
