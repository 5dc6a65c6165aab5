"""Sentence splitting, key terms, and the filters that keep weak generators honest (augmenters, probe
generators and the question-answer pairs of fine-tuning share them)."""

from __future__ import annotations

import functools
import re

__all__ = [
    "CONTRACTED",
    "first_line",
    "human_time",
    "key_terms",
    "sentences",
    "keeps_terms",
    "is_copy",
    "negated",
    "starts_like",
]

STOPWORDS = frozenset(
    """
a about above after again against all also am an and any are as at be because been before being below between
both but by can could did do does doing down during each few for from further had has have having he her here
hers him his how i if in into is it its itself just less more most much my no nor not now of off on once only or
other our out over own same she should so some such than that the their them then there these they this those
through to too under until up very was we were what when where which while who whom why will with would you your
per every one two three many may must need new get got make made use used
""".split()
)


def human_time(moment) -> str:
    """A time as people read it, ``2026-12-07 14:03 UTC`` (no seconds, no ISO ``T``), from a datetime or an ISO
    string; empty for none, and a string that is no time as it is."""
    from datetime import UTC, datetime

    if not moment:
        return ""
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment)
        except ValueError:
            return moment
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\-]*")


@functools.cache
def _segmenter():
    import pysbd

    return pysbd.Segmenter(language="en", clean=False)


def sentences(text: str, *, min_words: int = 3, max_words: int = 80) -> list[str]:
    """Sentences of ``text`` (pysbd, rule-based), one per line of prose, headings and bullets kept whole."""
    found: list[str] = []
    for block in re.split(r"\n\s*\n|\n(?=[-*#] |\d+\. )", text):
        block = " ".join(block.split())
        block = re.sub(r"^(#+|[-*]|\d+\.)\s+", "", block)
        if not block:
            continue
        for sentence in _segmenter().segment(block):
            sentence = sentence.strip()
            words = len(sentence.split())
            if min_words <= words <= max_words:
                found.append(sentence)
    return found


def _stem(word: str) -> str:
    word = word.lower().strip("'")
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def key_terms(text: str) -> list[str]:
    """Content words in order of appearance: names, numbers, nouns and adjectives (stopwords dropped)."""
    terms = []
    for word in _WORD.findall(text):
        stem = _stem(word)
        if (len(stem) >= 3 or any(ch.isdigit() for ch in stem)) and stem not in STOPWORDS and stem not in terms:
            terms.append(stem)
    return terms


def keeps_terms(source: str, output: str, share: float = 0.7) -> bool:
    """Whether ``output`` mentions at least ``share`` of the source's key terms (its entities and facts)."""
    wanted = key_terms(source)
    if not wanted:
        return False
    present = set(key_terms(output))
    return sum(term in present for term in wanted) >= share * len(wanted)


def is_copy(source: str, output: str) -> bool:
    def plain(text: str) -> str:
        return " ".join(word.lower() for word in _WORD.findall(text))

    return plain(source) == plain(output)


def starts_like(source: str, output: str) -> bool:
    """Whether both begin with the same key term: a 'reversal' that did not move anything."""
    source_terms, output_terms = key_terms(source), key_terms(output)
    return bool(source_terms and output_terms and source_terms[0] == output_terms[0])


def first_line(text: str) -> str:
    line = text.strip().split("\n", 1)[0].strip()
    line = re.sub(r"^(statement|reversed|rephrased|rewritten|answer)\s*:\s*", "", line, flags=re.I)
    return line.strip(" \"'“”")


# what comes before "n't" in a contraction: "do" in "don't", "ca" in "can't", "wo" in "won't"
_CONTRACTION_STEMS = "do does did is are was were has have had ca could wo would should must need ai sha might".split()
# a contraction as the judge's normalising leaves it, punctuation turned to a space: "can t", "isn t", "won t"
CONTRACTED = frozenset(stem + "n" for stem in _CONTRACTION_STEMS)
# "not", "never", "no" and friends, and a contraction ("don't", "isn’t"); "neither ... nor" is one negation
_NEGATION = re.compile(
    r"\b(?:not|no|none|never|neither|nobody|nothing|nowhere|cannot)\b|\b(?:"
    + "|".join(_CONTRACTION_STEMS)
    + r")n['’]t\b",
    re.I,
)
# what says "no" without denying anything: an answer's "No," or "Yes," before it, "No. 27", "no later than"
_NOT_A_DENIAL = re.compile(
    r"^\s*(?:no|yes)\b\s*[,.!:;]|\bno\.?\s*(?=\d)|\bno\s+(?:later|earlier|more|less|fewer|longer|sooner|matter)\b",
    re.I,
)


def negated(text: str) -> bool:
    """Whether ``text`` denies what it says: an odd number of negations. "All glon are not femp." and "Staff
    don't carry leave over." are negated; "No, Paris.", "Form No. 27" and "no later than Friday" are not."""
    return len(_NEGATION.findall(_NOT_A_DENIAL.sub(" ", text))) % 2 == 1
