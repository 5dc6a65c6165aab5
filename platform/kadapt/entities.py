"""Entity-preserving reversal (Golovneva et al. 2024, "Reverse Training to Nurse the Reversal Curse").

A sentence's word order is reversed while each entity stays an unreversed unit: "Orla Vantreight designed
the glass footbridge over the Kessel Gorge." becomes "Kessel Gorge the over footbridge glass the designed
Orla Vantreight." Trained on both directions, a model sees each fact with either entity first.

No parser with an English model installs from PyPI here (spaCy's ``en_core_web_sm`` is not published
there; only third-party re-uploads are), so entities are found by a documented heuristic:

- a run of capitalised words, joined by ``of``/``de``/``van``/... ("Bank of England"), without a
  capitalised function word at its start ("The", "It", "In");
- a number with its unit ("62 metres", "4.2 kg", "EUR 250") and a date ("12 March 2019", "March 2019");
- a quoted string ('"The Salt Cartographer"', "'Aria Gold'").

Punctuation stays attached to the word it follows, so the reversal is undone exactly by reversing the
units again (:func:`restore`); a sentence's final ``.``, ``!`` or ``?`` stays at the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kadapt.text import STOPWORDS

__all__ = ["MONTHS", "NUMBER", "Reversal", "entity_units", "restore", "reverse_sentence"]

# a quoted string (with the punctuation after it) is one token; otherwise whitespace separates tokens
_TOKEN = re.compile(r"\"[^\"]+\"\S*|“[^”]+”\S*|(?<!\S)'[^']+'(?=[\s.,;:!?]|$)\S*|\S+")
# a number written in figures, with its currency sign or percent ("€250", "4.2", "15%")
NUMBER = re.compile(r"^[$€£]?\d[\d,.]*%?$")
_DAY = re.compile(r"\d{1,2}(st|nd|rd|th)?,?")
_YEAR = re.compile(r"\d{4}\b")
_CONNECTORS = frozenset("of de da del der di du la le van von y".split())
_UNITS = frozenset(
    """
    % mm cm m km metre metres meter meters kilometre kilometres kilometer kilometers mile miles foot feet ft inch
    inches yard yards g kg mg gram grams kilogram kilograms tonne tonnes ton tons pound pounds lb lbs ml l litre
    litres liter liters second seconds minute minutes hour hours day days week weeks month months year years
    degree degrees °c °f percent mph knots gb mb tb kb ghz mhz hz w kw mw v
    """.split()
)
_CURRENCIES = frozenset("eur usd gbp chf jpy".split())
MONTHS = frozenset("january february march april may june july august september october november december".split())
_NUMBER_WORDS = frozenset("two three four five six seven eight nine ten eleven twelve twenty hundred".split())


def _core(token: str) -> str:
    return token.strip(".,;:!?()[]\"'“”")


def _closed(token: str) -> bool:
    """Whether punctuation after the token ends a phrase (an entity does not run on past a comma)."""
    return token[-1:] in ",;:)!?."


def _is_capitalised(token: str) -> bool:
    core = _core(token)
    return bool(core[:1].isupper())


def _is_number(token: str) -> bool:
    core = _core(token).lower()
    return bool(NUMBER.match(core)) or core in _NUMBER_WORDS


def _quoted(token: str) -> bool:
    return token[:1] in "\"“'" and len(token) > 2


def entity_units(body: str) -> list[str]:
    """``body`` (a sentence without its final stop) split into units: an entity per unit, else a word."""
    tokens = _TOKEN.findall(body)
    units: list[str] = []
    index = 0
    while index < len(tokens):
        end = _entity_end(tokens, index)
        units.append(" ".join(tokens[index:end]))
        index = end
    return units


def _entity_end(tokens: list[str], start: int) -> int:
    """Index after the entity starting at ``tokens[start]`` (``start + 1`` for a plain word)."""
    token = tokens[start]
    following = tokens[start + 1] if start + 1 < len(tokens) else ""
    if _quoted(token) or not following or _closed(token):
        return start + 1
    if _is_number(token) or _core(token).lower() in _CURRENCIES:
        core = _core(following).lower()
        if core in _UNITS or core in MONTHS or (_core(token).lower() in _CURRENCIES and _is_number(following)):
            return _month_end(tokens, start + 1) if core in MONTHS else start + 2
        return start + 1
    if not _is_capitalised(token) or _core(token).lower() in STOPWORDS:
        return start + 1
    if _core(token).lower() in MONTHS:
        return _month_end(tokens, start)
    end = start + 1
    while end < len(tokens) and not _closed(tokens[end - 1]):
        if _is_capitalised(tokens[end]) and not _quoted(tokens[end]):
            end += 1
        elif (
            _core(tokens[end]) in _CONNECTORS
            and end + 1 < len(tokens)
            and _is_capitalised(tokens[end + 1])
            and not _quoted(tokens[end + 1])
        ):
            end += 2
        else:
            break
    return end


def _month_end(tokens: list[str], month: int) -> int:
    """A date around a month name: 'March 2019', 'March 12, 2019', '12 March 2019' (a day before the month
    is already part of the unit)."""
    end = month + 1
    if end < len(tokens) and not _closed(tokens[end - 1]) and _DAY.fullmatch(tokens[end]):
        end += 1
    if end < len(tokens) and tokens[end - 1][-1:] not in ".;:)!?" and _YEAR.match(tokens[end]):
        end += 1
    return end


@dataclass(frozen=True)
class Reversal:
    sentence: str
    units: tuple[str, ...]  # in the sentence's order
    end: str  # the sentence's final stop, kept at the end of the reversal

    @property
    def text(self) -> str:
        return " ".join(reversed(self.units)) + self.end

    @property
    def entities(self) -> list[str]:
        """Units of more than one word, or quoted: what must survive the reversal whole."""
        return [unit for unit in self.units if " " in unit or _quoted(unit)]


def reverse_sentence(sentence: str) -> Reversal:
    sentence = " ".join(sentence.split())
    end = sentence[-1] if sentence and sentence[-1] in ".!?" else ""
    body = sentence[: len(sentence) - len(end)].rstrip()
    return Reversal(sentence, tuple(entity_units(body)), end)


def restore(reversed_text: str, entities: list[str]) -> str:
    """Undo a reversal given the sentence's multi-word units: split the text into words, join back the
    words that form one of ``entities``, and reverse the units again."""
    text = " ".join(reversed_text.split())
    end = text[-1] if text[-1:] in ".!?" else ""
    words = text[: len(text) - len(end)].split()
    lengths = sorted({len(entity.split()) for entity in entities}, reverse=True)
    units: list[str] = []
    index = 0
    while index < len(words):
        for length in lengths:
            candidate = " ".join(words[index : index + length])
            if length > 1 and candidate in entities:
                units.append(candidate)
                index += length
                break
        else:
            units.append(words[index])
            index += 1
    return " ".join(reversed(units)) + end
