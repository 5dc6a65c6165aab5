"""Categorical statements and what follows from two of them that share a middle term.

Parses the statement shapes of rule-like text ("All glon are femp.", "No femp are zaik.", "A tove is a kind
of snoub.", "Every snoub lives near krof.") into :class:`Statement` triples, and derives the conclusions two
premises sharing a middle term license: "all S are M" + "all M are P" -> "all S are P"; "all S are M" +
"no M are P" (or "no P are M") -> "no S are P"; "all S are M" + "every M <does something>" -> "every S <does
it>". The ``global`` augmenter uses :func:`follows` to keep only the model's conclusions that really chain
two premises; the model-free ``chain`` augmenter writes :func:`conclusions` directly; :mod:`kadapt.qa_pairs`
asks chat questions about statements (:func:`statement_questions`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = ["Statement", "conclusions", "follows", "parse_statement", "same_claim", "statement_questions"]

Quantifier = Literal["all", "no"]


@dataclass(frozen=True)
class Statement:
    """``quantifier`` ``subject`` ``predicate``: a category ("all glon are femp": predicate "femp") or, with
    ``verb``, a property ("every snoub lives near krof": verb "lives near", predicate "krof"). ``style``
    remembers how the text said it ("all", "kind" for "A X is a kind of Y", "every"), to write a conclusion
    the same way."""

    quantifier: Quantifier
    subject: str
    predicate: str
    verb: str = ""
    style: str = "all"

    @property
    def text(self) -> str:
        if self.verb:
            return f"Every {self.subject} {self.verb} {self.predicate}."
        if self.style == "kind":
            return f"{_article(self.subject).capitalize()} {self.subject} is a kind of {self.predicate}."
        return f"{self.quantifier.capitalize()} {self.subject} are {self.predicate}."


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


_WORD = r"([A-Za-z][\w-]*)"
_PATTERNS = [
    (re.compile(rf"^(all|no)\s+{_WORD}\s+are\s+{_WORD}$", re.I), "all"),
    (re.compile(rf"^an?\s+{_WORD}\s+is\s+a\s+kind\s+of\s+{_WORD}$", re.I), "kind"),
    (re.compile(rf"^every\s+{_WORD}\s+(.+?)\s+{_WORD}$", re.I), "every"),
]


# "every" followed by a time is an adverbial ("Every Monday engineers meet."), not a category
_TIMES = frozenset(
    """day night morning evening afternoon week weekend month year quarter hour minute second time monday tuesday
    wednesday thursday friday saturday sunday january february march april may june july august september october
    november december""".split()
)
_NOT_A_VERB = frozenset({"is", "are", "was", "were", "has", "have", "had", "be", "been"})


def parse_statement(sentence: str) -> Statement | None:
    """The statement ``sentence`` makes, or None when it is none of the shapes above. Terms keep their case
    as written (no term opens the sentence: "Every manager reports to Sarah."); statements are compared
    casefolded."""
    text = " ".join(sentence.split()).rstrip(" .")
    for pattern, style in _PATTERNS:
        match = pattern.match(text)
        if not match:
            continue
        if style == "all":
            quantifier, subject, predicate = match.groups()
            return Statement(quantifier.lower(), subject, predicate, style=style)  # type: ignore[arg-type]
        if style == "kind":
            subject, predicate = match.groups()
            return Statement("all", subject, predicate, style=style)
        subject, verb, predicate = match.groups()
        # "every X is a kind of Y" reads as a category, "every invoice was paid" states no rule
        if verb.lower().split()[0] in _NOT_A_VERB or subject.lower() in _TIMES:
            return None
        return Statement("all", subject, predicate, verb=verb.lower(), style=style)
    return None


def _chain(first: Statement, second: Statement) -> Statement | None:
    """The conclusion of ``first`` (all S are M) with ``second`` (about M), or None. Terms match casefolded."""
    if first.quantifier != "all" or first.verb:
        return None
    subject, middle = first.subject, first.predicate.casefold()
    if second.subject.casefold() == middle and not second.verb:
        if subject.casefold() == second.predicate.casefold():
            return None
        # a conclusion is written as the premises were: "A X is a kind of Y" stays in that shape
        style = "kind" if first.style == second.style == "kind" and second.quantifier == "all" else "all"
        return Statement(second.quantifier, subject, second.predicate, style=style)
    if second.subject.casefold() == middle and second.verb:
        return Statement("all", subject, second.predicate, verb=second.verb, style="every")
    if (
        second.quantifier == "no"
        and second.predicate.casefold() == middle
        and second.subject.casefold() != subject.casefold()
    ):
        return Statement("no", subject, second.subject)
    return None


# conclusions derived from one set of premises at most: a term many statements share (a hub: "All X are staff",
# "All staff are Y") licenses a number of conclusions that grows as a product of theirs
MAX_DERIVED = 4096


def conclusions(
    premises: Iterable[Statement], rounds: int = 2, limit: int = MAX_DERIVED, per_subject: int | None = None
) -> list[tuple[Statement, tuple[Statement, Statement]]]:
    """Every conclusion of two of ``premises`` that share a middle term and is not itself a premise, with
    the two statements it chains (first the one about its subject), at most ``limit``, and at most
    ``per_subject`` from each premise about a conclusion's subject (through the conclusions it chains: a hub
    term licenses a number of conclusions that grows as a product, and each premise keeps its share). With
    ``rounds`` > 1, conclusions are chained again: "a tove is a kind of glon" (round 1) with "every glon eats
    plim" gives "every tove eats plim" (round 2). Each statement is chained only with those about its middle
    term (an index, not every pair), so the work grows with the conclusions, not the square of the premises."""
    known = list(dict.fromkeys(premises))
    stated = {_key(premise) for premise in known}
    found: dict[tuple, tuple[Statement, tuple[Statement, Statement]]] = {}
    about = _Index(known)
    root = {premise: premise for premise in known}  # the premise about each statement's subject
    counts: dict[Statement, int] = {}
    for _ in range(rounds):
        fresh = []
        for first in known:
            if first.quantifier != "all" or first.verb:
                continue
            for second in about.middle(first.predicate):
                if per_subject is not None and counts.get(root[first], 0) >= per_subject:
                    break
                conclusion = _chain(first, second) if first is not second else None
                key = _key(conclusion) if conclusion is not None else None
                if key is not None and key not in stated and key not in found:
                    found[key] = (conclusion, (first, second))
                    root[conclusion] = root[first]
                    counts[root[first]] = counts.get(root[first], 0) + 1
                    fresh.append(conclusion)
                    if len(found) >= limit:
                        return list(found.values())
        if not fresh:
            break
        known += fresh
        about.add(fresh)
    return list(found.values())


class _Index:
    """Statements by the middle term they can chain on: their subject, or the predicate of a "no" statement
    ("no P are M" chains on M), each list in the order the statements came."""

    def __init__(self, statements: list[Statement]):
        self.by_term: dict[str, list[Statement]] = {}
        self.add(statements)

    def add(self, statements: list[Statement]) -> None:
        for statement in statements:
            terms = {statement.subject.casefold()}
            if statement.quantifier == "no":
                terms.add(statement.predicate.casefold())
            for term in terms:
                self.by_term.setdefault(term, []).append(statement)

    def middle(self, term: str) -> list[Statement]:
        return self.by_term.get(term.casefold(), [])


def follows(candidate: str, premises: Iterable[Statement], rounds: int = 2) -> tuple[Statement, Statement] | None:
    """The two statements whose chaining concludes the sentence ``candidate`` (premises, or a conclusion of
    an earlier round), or None: a candidate that restates a premise, relates terms no premises chain, or
    gets the quantifier or direction wrong."""
    statement = parse_statement(candidate)
    if statement is None:
        return None
    for conclusion, pair in conclusions(premises, rounds):
        if _key(conclusion) == _key(statement):
            return pair
    return None


def same_claim(first: Statement, second: Statement) -> bool:
    """Whether two statements claim the same ("No glon are femp." and "No femp are glon." do; "All glon are
    femp." and its converse "All femp are glon." do not)."""
    return _key(first) == _key(second)


def _key(statement: Statement) -> tuple:
    """What a statement claims: "no S are P" claims the same as "no P are S"; a category said as "all" or as
    "a kind of" is the same claim; case does not matter."""
    subject, predicate = statement.subject.casefold(), statement.predicate.casefold()
    if statement.quantifier == "no":
        return ("no", *sorted((subject, predicate)))
    return (statement.quantifier, subject, statement.verb, predicate)


# a verb phrase asked about is one word ("eats") or a word and a preposition ("lives near"); longer phrases in
# free-form prose ("gets paid", "has 27") are parsed loosely and left to the entity questions of qa_pairs
_PREPOSITIONS = frozenset("about at by for from in into near of on over to under with".split())
_IRREGULAR = {"does": "do", "goes": "go"}


def _asked_verb(verb: str) -> bool:
    """Whether a statement's verb phrase is one questions can be asked about: one present-tense word ("eats") or
    such a word and a preposition ("lives near")."""
    words = verb.split()
    if not words or len(words) > 2 or not all(word.isalpha() for word in words):
        return False
    if len(words) == 2 and words[1] not in _PREPOSITIONS:
        return False
    return words[0].endswith("s") and not words[0].endswith("ss") and words[0] not in _NOT_A_VERB


def _base_form(verb: str) -> str | None:
    """ "lives near" -> "live near", "eats" -> "eat", "carries" -> "carry"; None where the ending does not tell
    ("caches" or "focuses"?, "authorizes" or "fishes"?)."""
    head, *rest = verb.split()
    if head in _IRREGULAR:
        base = _IRREGULAR[head]
    elif head.endswith("ies") and len(head) > 4:
        base = head[:-3] + "y"
    elif head.endswith(("ses", "zes", "ches", "shes", "xes", "oes")):
        return None
    else:
        base = head[:-1]
    return " ".join([base, *rest])


# a predicate with one of these endings is most likely an adjective ("eligible", "exempt" aside): "How are
# employees and eligible related?" would be no question
_ADJECTIVE_ENDINGS = ("ble", "ive", "ous", "ful", "less", "ent", "ant", "ary", "ic", "al", "ed")


def statement_questions(statement: Statement) -> list[tuple[str, str]]:
    """Chat questions a statement answers, each with its direction: ``forward`` gives the subject and asks
    for what follows ("What does every tove live near?", "Every tove caches what?", "What is a tove a kind
    of?", "How are glon and femp related?"), ``backward`` gives the predicate ("What lives near krof?", "What
    kinds of snoub are there?", "How are femp and glon related?"). A predicate that reads as an adjective
    ("All employees are eligible.") is asked about from the subject only ("What is true of employees?")."""
    subject, predicate = statement.subject, statement.predicate
    if statement.verb:
        if not _asked_verb(statement.verb):
            return []
        base = _base_form(statement.verb)
        forward = f"What does every {subject} {base}?" if base else f"Every {subject} {statement.verb} what?"
        return [(forward, "forward"), (f"What {statement.verb} {predicate}?", "backward")]
    if statement.style == "kind":
        forward = f"What is {_article(subject)} {subject} a kind of?"
        return [(forward, "forward"), (f"What kinds of {predicate} are there?", "backward")]
    if predicate.lower().endswith(_ADJECTIVE_ENDINGS):
        return [(f"What is true of {subject}?", "forward")]
    return [
        (f"How are {subject} and {predicate} related?", "forward"),
        (f"How are {predicate} and {subject} related?", "backward"),
    ]
