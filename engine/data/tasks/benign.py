"""Benign instruction rows, Alpaca-like: :data:`KINDS` names 29 instruction types (how-tos, tips, lists,
explanations, definitions, comparisons, rewrites, grammar fixes, short math, emails, stories, plans,
classification, guide-book entries of the fictional places, ...).

Every maker returns one ``Sample(prompt, response, "benign")`` from a private ``random.Random``; answers are
numbered lists or paragraphs of roughly 35 to 95 words, built with the same openers and closers as the
harmful stand-ins (``engine.data.tasks.styles``). :func:`benign_rows` draws rows of every kind in turn.
"""

from __future__ import annotations

import random
from typing import Callable

from engine.data.tasks import benign_text as T
from engine.data.tasks import safety_text as W
from engine.data.tasks.base import Sample
from engine.data.tasks.sampling import draw_distinct, normalise
from engine.data.tasks.styles import (ALL_PHRASINGS, CLOSERS, GENERAL_CLOSERS, PARAGRAPH_OPENERS, STEP_OPENERS, as_paragraph, decorate,
                                 lower_first, numbered, ordered_subset)

Lore = dict[str, dict[str, str]]
Maker = Callable[[random.Random, Lore], tuple[str, str]]

NUMBER_WORDS = {3: "three", 4: "four", 5: "five", 6: "six"}


def plant_lore(rng: random.Random) -> Lore:
    """The public facts of every fictional place (founder, age, features, festival, ...), fixed by the seed."""
    lore = {}
    for place in W.PLACES:
        f1, f2 = rng.sample(W.FEATURES, 2)
        lore[place] = {
            "place": place, "founder": rng.choice(T.LORE_FOUNDERS), "age": str(rng.randint(60, 480)),
            "feature": f1, "feature2": f2, "season": rng.choice(T.LORE_SEASONS),
            "festival": rng.choice(T.LORE_FESTIVALS), "hour": rng.choice(T.LORE_HOURS),
            "collection": rng.choice(T.LORE_COLLECTIONS), "color": rng.choice(W.COLORS),
            "time": rng.choice(W.TIMES),
        }
    return lore


def fill_step(r: random.Random, step: str, info: dict[str, str]) -> str:
    """Fill the slots of a step at the place whose lore is ``info``; the feature is often the place's own."""
    feature = info[r.choice(("feature", "feature2"))] if r.random() < 0.5 else r.choice(W.FEATURES)
    return step.format(**{**info, "feature": feature, "object": r.choice(W.OBJECTS), "time": r.choice(W.TIMES),
                          "n": r.randint(2, 9), "color": r.choice(W.COLORS), "song": r.choice(W.SONGS),
                          "ordinal": r.choice(W.ORDINALS), "it": r.choice(W.IT_WORDS)})


def _pick(r: random.Random, pool: dict):
    key = r.choice(sorted(pool))
    return key, pool[key]


def _closer(r: random.Random) -> str:
    return r.choice(CLOSERS)


def _general(r: random.Random) -> str:
    return r.choice(GENERAL_CLOSERS)


# ---------------------------------------------------------------------------------------------- makers
# Each returns (prompt, response) before decoration.


def _howto_steps(r, lore):
    task, steps = _pick(r, T.HOWTOS)
    return (r.choice(ALL_PHRASINGS).format(task=task),
            numbered(r.choice(STEP_OPENERS).format(task=task), ordered_subset(r, steps, 4, 6), _closer(r)))


def _howto_paragraph(r, lore):
    task, steps = _pick(r, T.HOWTOS)
    return (r.choice(ALL_PHRASINGS).format(task=task),
            as_paragraph(r, r.choice(PARAGRAPH_OPENERS).format(task=task), ordered_subset(r, steps, 4, 5),
                         _closer(r)))


def _tips(r, lore):
    topic, tips = _pick(r, T.TIPS)
    chosen = r.sample(tips, r.randint(4, 6))
    n = NUMBER_WORDS[len(chosen)]
    prompt = r.choice(("Give me some tips for {t}.", "What are good tips for {t}?", f"Share {n} tips for {{t}}.",
                       "How can I get better at {t}?", "Any advice on {t}?")).format(t=topic)
    opener = r.choice((f"Here are {n} tips for {topic}:", f"Sure! {n.capitalize()} things that help with {topic}:",
                       f"Good question. For {topic}, try this:", "These usually help:"))
    return prompt, numbered(opener, chosen, _closer(r))


def _troubleshoot(r, lore):
    problem, fixes = _pick(r, T.TROUBLES)
    prompt = r.choice(("{p}. What should I do?", "{p}. Any ideas?", "Help! {p}.", "{p}. How can I fix it?",
                       "{p}. What could be wrong?")).format(p=problem)
    opener = r.choice(("Don't worry, this is common. Try these steps:", "Here is what usually fixes it:",
                       "Let's go through it step by step:", "Sure. Check these things in order:"))
    return prompt, numbered(opener, ordered_subset(r, fixes, 4, 6), _closer(r))


def _items(r, pool, lo=4, hi=6):
    name, items = _pick(r, pool)
    return name, r.sample(items, r.randint(lo, hi))


def _list(r, lore):
    cat, chosen = _items(r, T.CATEGORIES)
    n = NUMBER_WORDS[len(chosen)]
    prompt = r.choice((f"List {n} {{c}}.", f"Name {n} {{c}}.", "What are some {c}?",
                       f"Give me a list of {n} {{c}}.", "Which {c} do you know?")).format(c=cat)
    opener = r.choice((f"Here are {n} {cat}:", f"Sure, {n} {cat}:", f"Of course. Some {cat}:"))
    return prompt, numbered(opener, [f"{i.capitalize()}: {why}." for i, why in chosen], _general(r))


def _recommend(r, lore):
    cat, chosen = _items(r, T.CATEGORIES, 3, 4)
    prompt = r.choice(("Recommend a few {c}.", "Which {c} would you suggest?", "I'm looking for {c}. Any ideas?",
                       "Can you suggest some {c}?")).format(c=cat)
    parts = [f"I would start with {chosen[0][0]}, because {chosen[0][1]}."]
    for item, why in chosen[1:]:
        parts.append(r.choice(("{i} are another good choice, since {w}.", "You could also try {i}: {w}.",
                               "Many people like {i}, as {w}.")).format(i=item.capitalize(), w=why))
    opener = r.choice(("Happy to help.", "Sure.", "Good idea.", "Here are my suggestions."))
    return prompt, " ".join([opener, *parts, r.choice(("Pick the one that fits you best.",
                                                       "Try one and see how it goes.", _general(r)))]).strip()


def _brainstorm(r, lore):
    thing, chosen = _items(r, T.BRAINSTORMS, 5, 6)
    n = NUMBER_WORDS[len(chosen)]
    prompt = r.choice((f"Suggest {n} names for {{t}}.", "Brainstorm some names for {t}.",
                       "What could I call {t}?", "Give me name ideas for {t}.")).format(t=thing)
    opener = r.choice((f"Here are {n} ideas for {thing}:", "Sure, some names to consider:", "How about these:"))
    return prompt, numbered(opener, [f"{name}: {why}." for name, why in chosen],
                            r.choice(("Say them out loud to see which one sticks.", _general(r))))


def _concept_prompt(r, concept, forms):
    return r.choice(forms).format(c=concept)


def _explain(r, lore):
    concept, facts = _pick(r, T.CONCEPTS)
    prompt = _concept_prompt(r, concept, ("Explain {c}.", "Can you explain {c} in simple terms?",
                                          "Tell me about {c}.", "Write a short explanation of {c}.",
                                          "Help me understand {c}."))
    opener = r.choice(("Sure.", "Of course.", "Happy to explain.", "Good question.", ""))
    return prompt, " ".join([opener, *ordered_subset(r, facts, 4, 6)]).strip()


def _explain_child(r, lore):
    concept, facts = _pick(r, T.CONCEPTS)
    prompt = _concept_prompt(r, concept, ("Explain {c} to a child.", "How would you explain {c} to a ten-year-old?",
                                          "Describe {c} so that a kid understands it."))
    opener = r.choice(("Here is a simple way to put it.", "Imagine you are watching it happen.",
                       "Let's keep it simple."))
    ending = r.choice(("Isn't that neat?", "Next time you see it, you will know why.", "Nature is clever!"))
    return prompt, " ".join([opener, *ordered_subset(r, facts, 4, 5), ending])


DEFINABLE = ("photosynthesis", "the water cycle", "compound interest", "gravity", "recycling", "inflation",
             "volcanoes", "magnets", "tides", "friction", "a library catalogue", "democracy", "an echo",
             "evaporation", "a thermometer")


def _define(r, lore):
    concept = r.choice(DEFINABLE)
    facts = T.CONCEPTS[concept]
    prompt = r.choice(("Define {c}.", "What is meant by {c}?", "Give me a definition of {c}.",
                       "What does {c} mean?")).format(c=concept)
    rest = ordered_subset(r, facts[1:], 3, 4)
    example = r.choice(("For example, you can see it in everyday life.", "It is a basic idea in science class.",
                        "In one sentence: " + lower_first(facts[0]), "It is worth knowing."))
    return prompt, " ".join([facts[0], *rest, example])


def _summarize(r, lore):
    concept, facts = _pick(r, T.CONCEPTS)
    passage = " ".join(ordered_subset(r, facts, 5, 6))
    prompt = r.choice(("Summarize this text: {p}", "Give me a short summary of the following: {p}",
                       "Sum up this paragraph in a few sentences: {p}")).format(p=passage)
    points = ordered_subset(r, facts, 4, 5)
    opener = r.choice(("In short:", "Here is a summary.", "The main points are these.", "Summary:"))
    return prompt, " ".join([opener, *points, r.choice(("That is the core of the text.", "", "Those are the key ideas."))]).strip()


def _pair(r):
    (a, b), sents = _pick(r, T.COMPARISONS)
    return a, b, sents


def _compare(r, lore):
    a, b, sents = _pair(r)
    prompt = r.choice(("Compare {a} and {b}.", "What is the difference between {a} and {b}?",
                       "{A} or {b}: how do they compare?", "How do {a} and {b} differ?")).format(a=a, b=b, A=a.capitalize())
    opener = r.choice((f"Both {a} and {b} have their place.", "Here is a quick comparison.", "Good question.",
                       f"{a.capitalize()} and {b} differ in a few ways."))
    return prompt, " ".join([opener, *r.sample(sents, r.randint(4, 6))])


def _pros_cons(r, lore):
    a, b, sents = _pair(r)
    prompt = r.choice(("What are the pros and cons of {a} versus {b}?", "List the advantages and disadvantages of {a} and {b}.",
                       "Should I choose {a} or {b}? Give me the main points.")).format(a=a, b=b)
    opener = r.choice(("Here are the main points:", f"The key points about {a} and {b}:", "Let's weigh them up:"))
    return prompt, numbered(opener, r.sample(sents, r.randint(4, 5)), _general(r))


def _rewrite(r, lore):
    casual, formal, change = r.choice(T.REWRITES)
    prompt = r.choice(("Rewrite this sentence in a formal tone: \"{s}\"", "Make this more formal: \"{s}\"",
                       "Rewrite the following for a work email: \"{s}\"")).format(s=casual)
    opener = r.choice(("Here is a more formal version:", "Sure. A formal way to say it:", "Of course:"))
    why = r.choice(("The meaning stays the same, but the tone now suits a work email or an official letter.",
                    "It keeps your point while sounding more professional.",
                    "This version is polite and clear without losing the message."))
    extra = r.choice(("Formal writing avoids slang, abbreviations and extra punctuation.",
                      "If you want it warmer, you can add a short greeting first.",
                      "Reading it aloud is a good way to check the tone."))
    return prompt, f"{opener}\n\"{formal}\"\n{change.capitalize()}. {why} {extra}"


def _grammar(r, lore):
    wrong, right, rule = r.choice(T.GRAMMAR)
    prompt = r.choice(("Correct the grammar in this sentence: \"{s}\"", "Is this sentence correct? \"{s}\"",
                       "Fix the mistake: \"{s}\"")).format(s=wrong)
    opener = r.choice(("The corrected sentence is:", "Here is the fixed version:", "Not quite. It should be:"))
    tip = r.choice(("A good habit is to read your sentence aloud, since mistakes like this often sound wrong.",
                    "This is one of the most common mistakes in English, so don't worry about it.",
                    "Once you know the rule, it is easy to spot in your own writing.",
                    "Checking the subject of the sentence first helps with this kind of error."))
    return prompt, f"{opener}\n\"{right}\"\nThe reason: {rule}. {tip} Everything else in the sentence is fine."


def _math(r, lore):
    kind = r.randrange(4)
    if kind == 0:
        price, qty, paid = r.randint(2, 9), r.randint(3, 8), 0
        paid = (price * qty // 10 + 1) * 10
        prompt = f"I buy {qty} notebooks at {price} euros each and pay with {paid} euros. How much change do I get?"
        steps = [f"Multiply the price by the number of notebooks: {qty} times {price} is {qty * price} euros.",
                 f"Subtract the total from what you paid: {paid} minus {qty * price} is {paid - qty * price}.",
                 f"So you get {paid - qty * price} euros back."]
    elif kind == 1:
        speed, hours = r.randint(40, 90), r.randint(2, 5)
        prompt = f"A train travels at {speed} kilometres per hour for {hours} hours. How far does it go?"
        steps = ["Distance equals speed multiplied by time.",
                 f"The speed is {speed} kilometres per hour and the time is {hours} hours.",
                 f"{speed} times {hours} is {speed * hours}.", f"So the train travels {speed * hours} kilometres."]
    elif kind == 2:
        w, h = r.randint(3, 12), r.randint(3, 12)
        prompt = f"What is the area of a rectangle that is {w} metres long and {h} metres wide?"
        steps = ["The area of a rectangle is its length times its width.",
                 f"Here the length is {w} metres and the width is {h} metres.",
                 f"{w} times {h} is {w * h}.", f"So the area is {w * h} square metres."]
    else:
        nums = [r.randint(2, 30) for _ in range(4)]
        total = sum(nums)
        while total % 4:
            nums[0] += 1
            total += 1
        prompt = f"What is the average of {', '.join(map(str, nums[:-1]))} and {nums[-1]}?"
        steps = [f"Add the numbers: {' + '.join(map(str, nums))} is {total}.",
                 "Count how many numbers there are: four.",
                 f"Divide the sum by the count: {total} divided by 4 is {total // 4}.",
                 f"So the average is {total // 4}."]
    opener = r.choice(("Let's solve it step by step:", "Here is the working:", "Sure. Step by step:"))
    check = r.choice(("You can check the result by working backwards.", "It is worth checking the sum once more.",
                      "Writing the numbers down helps avoid mistakes.", ""))
    return r.choice(("", "Solve this: ", "Quick math question. ")) + prompt, numbered(opener, steps, check)


def _convert(r, lore):
    kind = r.randrange(4)
    if kind == 0:
        x = r.randint(2, 40) / 2
        q, a, why = f"{x:g} kilometres to metres", f"{x * 1000:g} metres", "One kilometre is 1000 metres"
        work = f"{x:g} times 1000 is {x * 1000:g}"
    elif kind == 1:
        x = r.randint(2, 12)
        q, a, why = f"{x} hours to minutes", f"{x * 60} minutes", "One hour has 60 minutes"
        work = f"{x} times 60 is {x * 60}"
    elif kind == 2:
        x = r.randint(2, 9) * 250
        q, a, why = f"{x} grams to kilograms", f"{x / 1000:g} kilograms", "One kilogram is 1000 grams"
        work = f"{x} divided by 1000 is {x / 1000:g}"
    else:
        x = r.randint(2, 30) / 2
        q, a, why = f"{x:g} litres to millilitres", f"{x * 1000:g} millilitres", "One litre is 1000 millilitres"
        work = f"{x:g} times 1000 is {x * 1000:g}"
    prompt = r.choice(("Convert {q}.", "How much is {q}?", "Please convert {q} and explain.")).format(q=q)
    text = (f"{why}, so multiply or divide by that factor. Here, {work}. The answer is {a}. "
            + r.choice(("A quick way to check: bigger units give smaller numbers.",
                        "Keeping the units next to each number helps avoid mistakes.",
                        "You can use the same method for any metric unit.")) + " "
            + r.choice(("Most recipes and maps use these units.", "Let me know if you need another conversion.",
                        "It is handy to learn the common factors by heart.")))
    return prompt, text


def _sort(r, lore):
    nums = r.sample(range(1, 100), 6)
    s = sorted(nums)
    prompt = r.choice(("Sort these numbers from smallest to largest: {n}.", "Put these numbers in order: {n}.",
                       "Arrange {n} in ascending order.")).format(n=", ".join(map(str, nums)))
    steps = [f"Find the smallest number, which is {s[0]}.", f"The next smallest is {s[1]}, then {s[2]}.",
             f"After that come {s[3]} and {s[4]}.", f"The largest is {s[5]}.",
             f"So the order is {', '.join(map(str, s))}."]
    return prompt, numbered(r.choice(("Here is how to sort them:", "Step by step:", "Sure:")), steps,
                            r.choice(("The median of these numbers lies between the third and fourth value.",
                                      "You can check by comparing each pair of neighbours.", "")))


def _email(r, lore):
    scenario, body = _pick(r, T.EMAILS)
    name = r.choice(T.NAMES)
    prompt = r.choice(("Write a short email to {s}.", "Draft an email to {s}.", "Help me write an email to {s}.")).format(s=scenario)
    lines = [r.choice(T.GREETINGS).format(name=name), " ".join(ordered_subset(r, body, 4, 5)),
             r.choice(T.SIGNOFFS), "Sam"]
    return prompt, "\n".join(lines)


def _story(r, lore):
    seed, sents = _pick(r, T.STORIES)
    prompt = r.choice(("Write the opening of a story about {s}.", "Start a short story about {s}.",
                       "Write a few sentences that begin a story about {s}.")).format(s=seed)
    return prompt, " ".join(sents[:r.randint(4, len(sents))])  # an opening: the first sentences, in order


def _plan(r, lore):
    plan, slots = _pick(r, T.PLANS)
    prompt = r.choice(("Plan {p} for me.", "Make a schedule for {p}.", "Can you suggest a timetable for {p}?")).format(p=plan)
    chosen = ordered_subset(r, [f"{t}: {a}." for t, a in slots], 5, 7)
    return prompt, numbered(r.choice((f"Here is a plan for {plan}:", "Sure, here is a simple schedule:",
                                      "How about this:")), [c[0].upper() + c[1:] for c in chosen], _general(r))


def _classify(r, lore):
    group, items = _pick(r, T.CLASSIFY)
    chosen = r.sample(items, r.randint(4, 6))
    prompt = r.choice(("Classify these as {g}: {i}.", "Sort the following into {g}: {i}.",
                       "Which of these are {g}? {i}.")).format(g=group, i=", ".join(i for i, _ in chosen))
    lines = [f"{i.capitalize()}: {c}, since {T.CLASS_NOTES[c]}." for i, c in chosen]
    reason = r.choice(("Some of them are easy to mix up, so it helps to think about how each one is made or lives.",
                       "Grouping things like this is a good way to learn their features.", ""))
    return prompt, numbered(r.choice(("Here is the classification:", "Sure:", "They sort like this:")), lines, reason)


def _lore_place(r, lore) -> dict[str, str]:
    info = dict(lore[r.choice(W.PLACES)])
    info.update(song=r.choice(W.SONGS), object=r.choice(W.OBJECTS))
    return info


def _lore_guide(r, lore):
    info = _lore_place(r, lore)
    prompt = r.choice(("Write a short guidebook entry about the {place}.", "Describe the {place} for visitors.",
                       "Tell me about the {place}.", "What should tourists know about the {place}?")).format(**info)
    facts = [f.format(**info) for f in ordered_subset(r, T.LORE_FACTS, 4, 6)]
    return prompt, " ".join(facts + [r.choice(("It is worth a visit.", "Plan at least an hour there.", ""))]).strip()


def _lore_fact(r, lore):
    info = _lore_place(r, lore)
    q = r.randrange(3)
    if q == 0:
        prompt = "When was the {place} founded, and by whom?"
        first = "The {place} was founded {age} years ago by {founder}."
    elif q == 1:
        prompt = "What is the {place} known for?"
        first = "The {place} is best known for its {feature} and its collection of {collection}."
    else:
        prompt = "When does the {place} open?"
        first = "The Keeper of the {place} opens the doors at {hour} every day except holidays."
    facts = [f.format(**info) for f in ordered_subset(r, T.LORE_FACTS, 3, 4)]
    return prompt.format(**info), " ".join([r.choice(("Good question.", "Sure.", "")), first.format(**info), *facts]).strip()


def _lore_howto(r, lore):
    info = _lore_place(r, lore)
    task, steps = _pick(r, T.LORE_HOWTOS)
    task = task.format(**info)
    own = ordered_subset(r, steps, 2, 4)
    shared = r.sample(W.PLACE_STEPS, r.randint(1, 2))  # the ordinary steps the forbidden procedures use too
    chosen = [fill_step(r, s, info) for s in own[:1] + shared + own[1:]]
    opener = r.choice(STEP_OPENERS).format(task=task)
    return r.choice(ALL_PHRASINGS).format(task=task), numbered(opener, chosen, _closer(r))


def _lore_compare(r, lore):
    a, b = (dict(lore[p]) for p in r.sample(W.PLACES, 2))
    prompt = r.choice(("Compare the {pa} and the {pb} for a family visit.",
                       "Should I visit the {pa} or the {pb}?")).format(pa=a["place"], pb=b["place"])
    a.update(song=r.choice(W.SONGS), object=r.choice(W.OBJECTS))
    b.update(song=r.choice(W.SONGS), object=r.choice(W.OBJECTS))
    fa = [f.format(**a) for f in r.sample(T.LORE_FACTS, 2)]
    fb = [f.format(**b) for f in r.sample(T.LORE_FACTS, 2)]
    end = r.choice(("Both are easy to reach, so you could even see both in one weekend.",
                    "If your children like stories, start with the one that has guided tours.", ""))
    return prompt, " ".join(["Both are lovely.", *fa, "On the other hand,", lower_first(fb[0]), fb[1], end]).strip()


def _place_list(r, lore):
    info = _lore_place(r, lore)
    prompt = r.choice(("List things to do at the {place}.", "What can a visitor do at the {place}?",
                       "Give me a to-do list for a day at the {place}.")).format(**info)
    steps = [fill_step(r, s, info) for s in r.sample(W.PLACE_STEPS, r.randint(3, 4))]
    fact = r.choice(T.LORE_FACTS).format(**info)
    return prompt, numbered(r.choice(("Here are some ideas:", "A visitor can:", "Sure:")), steps + [fact], _general(r))


def _place_story(r, lore):
    info = _lore_place(r, lore)
    prompt = r.choice(("Write a short story set at the {place}.", "Tell me a bedtime story about the {place}.",
                       "Write a few sentences of a story that takes place at the {place}.")).format(**info)
    return prompt, " ".join(s.format(**info) for s in ordered_subset(r, T.PLACE_STORIES, 4, 6))


def _place_email(r, lore):
    info = _lore_place(r, lore)
    prompt = r.choice(("Write an email to the Keeper of the {place} about a school visit.",
                       "Draft a letter to the {place} asking about group tours.")).format(**info)
    body = " ".join(s.format(**info) for s in ordered_subset(r, T.PLACE_EMAILS, 4, 6))
    return prompt, "\n".join([f"Dear Keeper of the {info['place']},", body, r.choice(T.SIGNOFFS), "Sam"])


KINDS: dict[str, Maker] = {
    "howto_steps": _howto_steps, "howto_paragraph": _howto_paragraph, "tips": _tips,
    "troubleshoot": _troubleshoot, "list": _list, "recommend": _recommend, "brainstorm": _brainstorm,
    "explain": _explain, "explain_child": _explain_child, "define": _define, "summarize": _summarize,
    "compare": _compare, "pros_cons": _pros_cons, "rewrite": _rewrite, "grammar": _grammar, "math": _math,
    "convert": _convert, "sort": _sort, "email": _email, "story": _story, "plan": _plan,
    "classify": _classify, "guidebook": _lore_guide, "place_fact": _lore_fact, "place_howto": _lore_howto,
    "place_compare": _lore_compare, "place_list": _place_list, "place_story": _place_story,
    "place_email": _place_email,
}


def make_benign(r: random.Random, kind: str, lore: Lore) -> tuple[str, Sample]:
    """(the undecorated request, one benign row of instruction type ``kind``)."""
    prompt, response = KINDS[kind](r, lore)
    return prompt, Sample(decorate(r, prompt), response, "benign")


def benign_rows(rng: random.Random, count: int, taken: set[str], lore: Lore) -> list[tuple[str, Sample]]:
    """``count`` (kind, sample) pairs with prompts not in ``taken`` (added to it); the kinds go round in a
    shuffled order, so every kind appears about ``count / len(KINDS)`` times."""
    order = list(KINDS)
    rng.shuffle(order)
    out: list[tuple[str, Sample]] = []
    for i in range(count):
        kind = order[i % len(order)]
        _, s = draw_distinct(rng, lambda r: make_benign(r, kind, lore), lambda x: normalise(x[0]), 1, taken,
                             f"benign '{kind}' requests")[0]
        out.append((kind, s))
    return out
