"""Question–answer pairs written from a document's sentences, model-free, for adapters that answer in chat.

Each sentence is split into units by the entity heuristic (:func:`kadapt.entities.entity_units`). Its
*entities* are the units that name something: a run of capitalised words, a number (with its unit), a date,
a quoted string, a single capitalised word that does not start the sentence. Two kinds of question come
from a sentence:

- ``cloze``: the sentence with one entity asked for ("Who designed the glass footbridge that spans the Kessel
  Gorge in Norway?"), answered by that entity ("Orla Vantreight.");
- ``about``: "Who is <name>?" and "What is <name> known for?" for a person ("What is ...?" for another name or a
  quoted title), answered by the sentence;
- ``statement``: of a categorical or rule-like sentence ("All glon are femp.", "A tove is a kind of snoub.",
  "Every snoub lives near krof."; :mod:`kadapt.statements`), "How are glon and femp related?", "What is a
  tove a kind of?", "What does every snoub live near?" and their reverses ("What lives near krof?"), answered
  by the sentence. Such sentences often name no entity at all.

A pair is ``forward`` when its question gives what the sentence says first and asks for what follows: a
``cloze`` question of an entity the sentence names late (more key terms before it than after), an ``about``
question of a name it names early. It is ``backward`` otherwise ("Who designed ...?" of a sentence that
begins with the designer; "Who is Dario Quellmann?" of one that ends with him). Trained on backward pairs,
a model sees each fact with either entity first — a countermeasure to the reversal curse (Berglund et al.
2023). ft gets the forward pairs only, aug-ft both, so that comparing them keeps measuring what the
reversed direction adds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from kadapt.entities import MONTHS, NUMBER, entity_units
from kadapt.statements import parse_statement, statement_questions
from kadapt.text import STOPWORDS, key_terms, sentences

__all__ = ["QAPair", "pair_counts", "qa_pairs", "sentence_pairs"]

Direction = Literal["forward", "backward"]

# the words of a capitalised run that make it a place or a thing rather than a person
_THING_WORDS = frozenset(
    """
    abbey airport avenue bank bay beach bell bridge canal cape castle cathedral church city club college company
    council court district festival forest gallery garden gardens glacier gorge hall harbour harbor hill hills
    hospital hotel house institute island islands lake library market mount mountain mountains museum ocean
    office opera orchestra palace parade park prize range ridge river road school sea seven society station
    street survey theatre theater tower university valley zoo
    """.split()
)
_PLACE_PREPOSITIONS = frozenset("in at on near outside from inside off".split())
_WHEN_PREPOSITIONS = frozenset("in since until before after during".split())
_YEAR = re.compile(r"^(1\d|20)\d\d$")


@dataclass(frozen=True)
class QAPair:
    """A chat question, the answer it is trained to get, and how it was written."""

    question: str
    answer: str
    kind: Literal["about", "cloze", "statement"]
    direction: Direction
    sentence: str

    @property
    def label(self) -> str:
        """``<kind>-<direction>``: the key its count goes under in training stats."""
        return f"{self.kind}-{self.direction}"


def _core(unit: str) -> str:
    return unit.strip(".,;:!?()[]").strip()


def _words(unit: str) -> list[str]:
    return _core(unit).split()


def _is_number(unit: str) -> bool:
    first = _core(unit).split()[0] if _core(unit) else ""
    return bool(NUMBER.match(first))


def _is_quoted(unit: str) -> bool:
    return _core(unit)[:1] in "\"“'"


def _is_name(unit: str, position: int) -> bool:
    """A capitalised unit that names something (not a sentence's capitalised first word, not a stopword)."""
    words = _words(unit)
    if not words or not words[0][:1].isupper() or _is_quoted(unit):
        return False
    if len(words) == 1:
        return position > 0 and words[0].lower() not in STOPWORDS
    return True


def _is_entity(unit: str, position: int) -> bool:
    return _is_quoted(unit) or _is_number(unit) or _is_name(unit, position) or _is_date(unit)


def _is_date(unit: str) -> bool:
    words = [word.lower() for word in _words(unit)]
    return bool(words) and (words[0] in MONTHS or (len(words) > 1 and words[1] in MONTHS))


def _is_person(unit: str, previous: str | None = None) -> bool:
    """A run of two or more capitalised words none of which names a place or a thing, not after "the" or a
    preposition of place ("on Skerry Vane"): asked with "who"."""
    words = _words(unit)
    after = _core(previous or "").lower()
    return (
        len(words) >= 2
        and all(word[:1].isupper() for word in words)
        and not any(re.sub(r"'s$", "", word.lower()) in _THING_WORDS for word in words)
        and after != "the"
        and after not in _PLACE_PREPOSITIONS
    )


def _prefix_leads(units: list[str], index: int) -> bool:
    """Whether the sentence says more before ``units[index]`` than after it (by key terms): then a question
    that gives the rest and asks for the unit follows the sentence's own order."""
    before = key_terms(" ".join(units[:index]))
    after = key_terms(" ".join(units[index + 1 :]))
    return len(before) > len(after)


def _about_question(unit: str, previous: str | None) -> str:
    entity = _core(unit)
    if _is_person(unit, previous):
        return f"Who is {entity}?"
    article = "the " if previous and previous.lower() == "the" else ""
    return f"What is {article}{entity}?"


def _cloze_question(units: list[str], index: int) -> str | None:
    """The sentence with ``units[index]`` replaced by a question word, as a question; None when no
    question word fits."""
    unit = units[index]
    before, after = list(units[:index]), list(units[index + 1 :])
    tail = unit[len(unit.rstrip(",;:")) :]  # a comma after the entity stays in the question
    if _is_person(unit, before[-1] if before else None):
        wh = "who"
    elif _is_number(unit):
        words = _words(unit)
        if len(words) == 1 and _YEAR.match(words[0].strip(",")):
            if before and _core(before[-1]).lower() in _WHEN_PREPOSITIONS:
                before.pop()
            wh = "when"
        else:
            wh = "how many" + ("".join(" " + word for word in words[1:]) if len(words) > 1 else "")
    elif _is_date(unit):
        if before and _core(before[-1]).lower() in _WHEN_PREPOSITIONS:
            before.pop()
        wh = "when"
    elif before and _core(before[-1]).lower() in _PLACE_PREPOSITIONS and not _is_quoted(unit):
        before.pop()
        wh = "where"
    else:
        wh = "what"
    if before and before[-1].lower() == "the" and wh == "what":
        before.pop()
    if not before:
        if not after:
            return None
        return f"{wh[:1].upper()}{wh[1:]}{tail} {' '.join(after)}?"
    body = " ".join([*before, wh + tail, *after]).rstrip(",;:")
    return f"{body[:1].upper()}{body[1:]}?"


def sentence_pairs(sentence: str) -> list[QAPair]:
    """The question–answer pairs of one sentence, forward and backward (see the module's docstring)."""
    sentence = " ".join(sentence.split())
    if sentence.endswith("?"):  # a question states no fact to ask about
        return []
    body = sentence.rstrip(".!").rstrip()
    units = entity_units(body)
    entities = [index for index, unit in enumerate(units) if _is_entity(unit, index)]
    stated = body + "."
    pairs: list[QAPair] = []
    seen: set[str] = set()

    def add(question: str | None, answer: str, kind, direction: Direction) -> None:
        if question and question not in seen and len(question.split()) >= 3:
            seen.add(question)
            pairs.append(QAPair(question, answer, kind, direction, sentence))

    for index in entities:
        unit = units[index]
        previous = units[index - 1] if index else None
        answer = _core(unit).strip("\"“”'") if _is_quoted(unit) else _core(unit)
        leads = _prefix_leads(units, index)
        add(_cloze_question(units, index), answer + ".", "cloze", "forward" if leads else "backward")
        if _is_quoted(unit) or (_is_name(unit, index) and len(_words(unit)) > 1):
            direction = "backward" if leads else "forward"
            add(_about_question(unit, previous), stated, "about", direction)
            if _is_person(unit, previous):
                add(f"What is {_core(unit)} known for?", stated, "about", direction)
    statement = parse_statement(body)
    for question, direction in statement_questions(statement) if statement is not None else []:
        add(question, stated, "statement", direction)  # type: ignore[arg-type]
    return pairs


def qa_pairs(texts: Iterable[str], directions: Iterable[Direction] = ("forward", "backward")) -> list[QAPair]:
    """The pairs of every sentence of ``texts``, in order, keeping the ``directions`` asked for."""
    wanted = set(directions)
    return [
        pair
        for text in texts
        for sentence in sentences(text)
        for pair in sentence_pairs(sentence)
        if pair.direction in wanted
    ]


def pair_counts(pairs: Iterable[QAPair]) -> dict[str, int]:
    """How many pairs of each ``<kind>-<direction>``."""
    counts: dict[str, int] = {}
    for pair in pairs:
        counts[pair.label] = counts.get(pair.label, 0) + 1
    return dict(sorted(counts.items()))
