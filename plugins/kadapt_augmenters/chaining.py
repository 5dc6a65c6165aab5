"""Categorical statements and what follows from two of them that share a middle term.

Parses the statement shapes of rule-like text ("All glon are femp.", "No femp are zaik.", "A tove is a kind
of snoub.", "Every snoub lives near krof.") into :class:`Statement` triples, and derives the conclusions two
premises sharing a middle term license: "all S are M" + "all M are P" -> "all S are P"; "all S are M" +
"no M are P" (or "no P are M") -> "no S are P"; "all S are M" + "every M <does something>" -> "every S <does
it>". The ``global`` augmenter uses :func:`follows` to keep only the model's conclusions that really chain
two premises; the model-free ``chain`` augmenter writes :func:`conclusions` directly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = ["Statement", "conclusions", "follows", "parse_statement"]

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
            article = "An" if self.subject[:1].lower() in "aeiou" else "A"
            return f"{article} {self.subject} is a kind of {self.predicate}."
        return f"{self.quantifier.capitalize()} {self.subject} are {self.predicate}."


_WORD = r"([A-Za-z][\w-]*)"
_PATTERNS = [
    (re.compile(rf"^(all|no)\s+{_WORD}\s+are\s+{_WORD}$", re.I), "all"),
    (re.compile(rf"^an?\s+{_WORD}\s+is\s+a\s+kind\s+of\s+{_WORD}$", re.I), "kind"),
    (re.compile(rf"^every\s+{_WORD}\s+(.+?)\s+{_WORD}$", re.I), "every"),
]


def parse_statement(sentence: str) -> Statement | None:
    """The statement ``sentence`` makes, or None when it is none of the shapes above."""
    text = " ".join(sentence.split()).rstrip(" .")
    for pattern, style in _PATTERNS:
        match = pattern.match(text)
        if not match:
            continue
        if style == "all":
            quantifier, subject, predicate = match.groups()
            return Statement(quantifier.lower(), subject.lower(), predicate.lower(), style=style)  # type: ignore[arg-type]
        if style == "kind":
            subject, predicate = match.groups()
            return Statement("all", subject.lower(), predicate.lower(), style=style)
        subject, verb, predicate = match.groups()
        if verb.lower().split()[0] in ("is", "are"):  # "every X is a kind of Y" reads as a category, not a verb
            return None
        return Statement("all", subject.lower(), predicate.lower(), verb=verb.lower(), style=style)
    return None


def _chain(first: Statement, second: Statement) -> Statement | None:
    """The conclusion of ``first`` (all S are M) with ``second`` (about M), or None."""
    if first.quantifier != "all" or first.verb:
        return None
    subject, middle = first.subject, first.predicate
    if second.subject == middle and not second.verb:
        if subject == second.predicate:
            return None
        # a conclusion is written as the premises were: "A X is a kind of Y" stays in that shape
        style = "kind" if first.style == second.style == "kind" and second.quantifier == "all" else "all"
        return Statement(second.quantifier, subject, second.predicate, style=style)
    if second.subject == middle and second.verb:
        return Statement("all", subject, second.predicate, verb=second.verb, style="every")
    if second.quantifier == "no" and second.predicate == middle and second.subject != subject:
        return Statement("no", subject, second.subject)
    return None


def conclusions(premises: Iterable[Statement], rounds: int = 2) -> list[tuple[Statement, tuple[Statement, Statement]]]:
    """Every conclusion of two of ``premises`` that share a middle term and is not itself a premise, with
    the two statements it chains (first the one about its subject). With ``rounds`` > 1, conclusions are
    chained again: "a tove is a kind of glon" (round 1) with "every glon eats plim" gives "every tove eats
    plim" (round 2)."""
    known = list(dict.fromkeys(premises))
    stated = {_key(premise) for premise in known}
    found: dict[tuple, tuple[Statement, tuple[Statement, Statement]]] = {}
    for _ in range(rounds):
        fresh = []
        for first in known:
            for second in known:
                conclusion = _chain(first, second) if first is not second else None
                key = _key(conclusion) if conclusion is not None else None
                if key is not None and key not in stated and key not in found:
                    found[key] = (conclusion, (first, second))
                    fresh.append(conclusion)
        if not fresh:
            break
        known += fresh
    return list(found.values())


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


def _key(statement: Statement) -> tuple:
    """What a statement claims: "no S are P" claims the same as "no P are S"; a category said as "all" or as
    "a kind of" is the same claim."""
    if statement.quantifier == "no":
        return ("no", *sorted((statement.subject, statement.predicate)))
    return (statement.quantifier, statement.subject, statement.verb, statement.predicate)
