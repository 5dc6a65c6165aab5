"""The ``syllogism`` dataset: premise pairs, asked which conclusion follows."""

from __future__ import annotations

import random

from kadapt.synthetic._common import Dataset, _check_size, _finish, _probe
from kadapt.synthetic._words import fresh_words

# Valid premise pairs over end terms S, P and middle term M whose conclusion relates S and P. "No" premises
# appear in both term orders, since "no X are Y" says the same as "no Y are X".
_ALL_FIGURE = (("all", "S", "M"), ("all", "M", "P"))
_NO_FIGURES = [
    (("all", "S", "M"), ("no", "M", "P")),
    (("all", "S", "M"), ("no", "P", "M")),
    (("no", "M", "S"), ("all", "P", "M")),
    (("no", "S", "M"), ("all", "P", "M")),
]


def syllogism_dataset(size: int = 30, seed: int = 0) -> Dataset:
    """``size`` premise pairs over three fresh nonsense words each, one document per pair.

    Premises use "all" and "no" only, in valid forms whose conclusion about the two end terms is one of
    "all S are P" (from "All S are M. All M are P.") or "no S are P" (from "all" with "no", four figures).
    The probe asks "About X and Y, it follows that" and offers three conclusions with the same words: "all S
    are P", its converse "all P are S" (not entailed) and "no S are P" or "no P are S" (the same claim).
    Conclusions with "some" are left out on purpose: "all S are P" entails "some S are P", and "no" and
    "some" read the same both ways, so a six-way choice would have several right answers. Exactly one
    choice is entailed; a third of the items conclude "no", so a model that prefers one quantifier or one
    word order scores chance (1/3). The premises are stated in either order, the terms of the question in
    either order, and the answer sits at each position equally often when ``size`` is a multiple of 3.
    """
    _check_size("syllogism", size, 1)
    words = fresh_words(3 * size, seed, "syllogism")
    rng = random.Random(f"syllogism:{seed}")
    documents = []
    for index in range(size):
        terms = dict(zip("SMP", words[3 * index : 3 * index + 3], strict=True))
        kind = index % 3  # 0 and 1 conclude "all", 2 concludes "no"
        figure = _ALL_FIGURE if kind < 2 else _NO_FIGURES[rng.randrange(len(_NO_FIGURES))]
        premises = [{"quantifier": q, "subject": terms[s], "predicate": terms[p]} for q, s, p in figure]
        if kind == 1 or (kind == 2 and rng.random() < 0.5):
            premises.reverse()  # the conclusion's subject is not always the first word mentioned
        text = " ".join(f"{p['quantifier'].capitalize()} {p['subject']} are {p['predicate']}." for p in premises)
        metadata = {"dataset": "syllogism", "index": index, "premises": premises}
        documents.append({"id": f"syllogism-{index:03d}", "text": text, "metadata": {"synthetic": metadata}})
    description = (
        f"{size} pairs of all/no premises over nonsense words; each probe asks which of 3 conclusions follows "
        "(syllogism), chance 1/3."
    )
    return _finish("syllogism", description, documents, _syllogism_probes)


def _conclude(premises: list[dict]) -> tuple[str, str, str]:
    """The conclusion (quantifier, subject, predicate) of two all/no premises that share one term."""
    first, second = ((p["quantifier"], p["subject"], p["predicate"]) for p in premises)
    shared = {first[1], first[2]} & {second[1], second[2]}
    if len(shared) != 1 or first[1] == first[2] or second[1] == second[2]:
        raise ValueError("premises must share exactly one term")
    (middle,) = shared
    quantifiers = sorted([first[0], second[0]])
    if quantifiers == ["all", "all"]:
        for upper, lower in ((first, second), (second, first)):
            if upper[2] == middle and lower[1] == middle:
                return "all", upper[1], lower[2]
    elif quantifiers == ["all", "no"]:
        universal, negative = (first, second) if first[0] == "all" else (second, first)
        if universal[2] == middle:
            other = negative[1] if negative[2] == middle else negative[2]
            return "no", universal[1], other
    raise ValueError(f"no all/no conclusion follows from {premises}")


def _syllogism_probes(records: list[tuple[str, dict]]) -> list[dict]:
    probes = []
    for doc_id, meta in sorted(records, key=lambda record: int(record[1]["index"])):
        index = int(meta["index"])
        quantifier, subject, predicate = _conclude(meta["premises"])
        block = index // 3
        first, second = (subject, predicate) if block % 2 == 0 else (predicate, subject)
        no_first, no_second = (subject, predicate) if (block // 2) % 2 == 0 else (predicate, subject)
        forward, converse, negative = (
            f"all {subject} are {predicate}",
            f"all {predicate} are {subject}",
            f"no {no_first} are {no_second}",
        )
        answer = forward if quantifier == "all" else negative
        distractors = [converse, negative] if quantifier == "all" else [forward, converse]
        if block % 2:
            distractors.reverse()
        choices = list(distractors)
        choices.insert((index + block) % 3, answer)
        # "no S are P" says the same as "no P are S": both are accepted
        answers = [answer] if quantifier == "all" else [answer, f"no {no_second} are {no_first}"]
        chat = f"What can you conclude about {first} and {second}?", answers
        question = f"About {first} and {second}, it follows that"
        probes.append(_probe("syllogism", question, choices, answer, [doc_id], chat))
    return probes
