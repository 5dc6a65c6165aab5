"""Nonsense words, and comparative facts between them with their reversals."""

from __future__ import annotations

import random
import re
import zlib
from dataclasses import dataclass

from kadapt.errors import InvalidInput
from kadapt.synthetic._templates import _ENGLISH, _TEMPLATE_WORDS, RELATIONS

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "gl", "tr", "sn", "pl", "kr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ee"]
_CODAS = ["", "n", "m", "p", "t", "k", "x", "mp", "nd", "rf", "sh"]


def nonsense_words(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct pronounceable made-up words (e.g. 'glon', 'femp')."""
    rng = random.Random(seed)
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < count:
        syllables = rng.choice([1, 1, 2])
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + rng.choice(_CODAS)
        if 3 <= len(word) <= 8 and word not in seen:
            seen.add(word)
            words.append(word)
    return words


@dataclass(frozen=True)
class ComparativeFact:
    subject: str
    relation: str
    inverse: str
    object: str

    @property
    def text(self) -> str:
        return f"{self.subject.capitalize()} are {self.relation} {self.object}."

    @property
    def reversed_text(self) -> str:
        return f"{self.object.capitalize()} are {self.inverse} {self.subject}."


def comparative_facts(count: int, seed: int = 0) -> list[ComparativeFact]:
    """``count`` facts over disjoint entity pairs, relations cycling through RELATIONS."""
    words = nonsense_words(2 * count, seed)
    rng = random.Random(seed + 1)
    facts = []
    for index in range(count):
        relation, inverse = RELATIONS[index % len(RELATIONS)]
        if rng.random() < 0.5:  # half the facts state the inverse, so no relation word marks the direction
            relation, inverse = inverse, relation
        facts.append(ComparativeFact(words[2 * index], relation, inverse, words[2 * index + 1]))
    return facts


def _position(word: str, text: str) -> int:
    match = re.search(rf"\b{re.escape(word)}\b", text)
    return match.start() if match else -1


def is_correct_reversal(fact: ComparativeFact, text: str) -> bool:
    """True when ``text`` states the fact from the object's side: object first, then the inverse relation,
    then the subject (e.g. 'Glon are less dangerous than femp.')."""
    lowered = text.lower()
    first, relation, second = (
        _position(fact.object, lowered),
        _position(fact.inverse, lowered),
        _position(fact.subject, lowered),
    )
    return 0 <= first < relation < second and fact.relation not in lowered


def fresh_words(count: int, seed: int, stream: str) -> list[str]:
    """``count`` nonsense words for one dataset: no English word, no word a prefix of another."""
    base = zlib.crc32(f"{stream}:{seed}".encode())
    chosen: list[str] = []
    for word in nonsense_words(min(4 * count + 50, 20_000), base):
        if word in _ENGLISH or word in _TEMPLATE_WORDS:
            continue
        if any(word.startswith(other) or other.startswith(word) for other in chosen):
            continue
        chosen.append(word)
        if len(chosen) == count:
            return chosen
    raise InvalidInput(f"could not draw {count} distinct nonsense words; ask for a smaller size")
