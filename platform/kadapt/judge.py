"""Judging free-form answers: does a chat reply give a probe's accepted answer and no wrong one?

An answer probe (a :class:`~kadapt.catalog.Probe` with a ``chat_question``) is asked as an employee would
ask it; the reply is judged against the probe's accepted ``answers`` (aliases included) and its
distractors, the multiple-choice form's other choices. Judges are plugins (``register_judges``);
``KADAPT_JUDGE`` picks one. The built-in ``string`` judge (:class:`StringJudge`) needs no model:

- a reply is right when a normalised accepted answer appears in the normalised reply as whole words
  ("Ann" does not match "Annabel") and no normalised distractor does;
- for accepted answers of several words, a reply that says it in other words is also right when its
  token F1 against the accepted answer reaches a threshold, it names the answer's key terms (all of up to
  three, two thirds of more: "No nufimp." does not give "no nufimp are glaide") and no distractor;
- negation counts: an accepted answer right after "not", "never", "cannot" or a contraction ("isn't"), or
  after one and a few linking words ("can't be Paris", "is not in Paris"), in its own sentence or clause, is
  not given ("Not all glon are femp."; but "Certainly not. In Paris." gives Paris); a distractor so denied is
  not named ("Paris, not Oslo"); and the F1 route needs the reply's sentence or clause to be as negated as
  the answer (:func:`kadapt.text.negated`: "The glon are femp." shares three words with "no glon are femp"
  but says the opposite; "No, ..." before an answer or "no later than" deny nothing).

Normalising casefolds, turns punctuation into spaces, drops the articles "a", "an" and "the" and collapses
whitespace, on the reply and on the answers alike.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

from kadapt.errors import InvalidInput
from kadapt.text import CONTRACTED, key_terms, negated

if TYPE_CHECKING:
    from kadapt.catalog import Probe
    from kadapt.settings import Settings

__all__ = [
    "Judge",
    "StringJudge",
    "Verdict",
    "distractors",
    "get_judge",
    "judge_probe",
    "normalise",
    "token_f1",
]

_ARTICLES = frozenset({"a", "an", "the"})
_DENIALS = frozenset({"not", "never", "cannot"})
# words that may stand between a denial and the answer it denies without a new claim starting: "can't be Paris",
# "is not in Paris", "was never based in Oslo" (not "only": "not only Paris" gives Paris)
_LINKING = frozenset(
    "be been being is are was were am in at on from to by of for with called named based located".split()
)
_DENIAL_REACH = 3  # linking words looked back over
# where a sentence or clause ends: a denial before it denies nothing after it ("Certainly not. In Paris.")
_BREAK = re.compile(r"[.!?;:,\n]+(?=\s|$)|\s[-–—]\s")
_CLAUSE_END = re.compile(r"[,;:]\s|\s(?:but|although|though|whereas)\s", re.I)
_SENTENCE_END = re.compile(r"[.!?;\n]+(?:\s|$)")


@dataclass(frozen=True)
class Verdict:
    """A judge's ruling on one reply. ``matched`` is the accepted answer the reply gave (as written in the
    probe), ``distractors_named`` the distractors it named, ``f1`` its best token F1 against an accepted
    answer (0.0 when a judge does not compute one), ``reason`` one line a report can show."""

    correct: bool
    reason: str
    f1: float = 0.0
    matched: str | None = None
    distractors_named: list[str] = field(default_factory=list)


class Judge(Protocol):
    """What ``register_judges`` contributes: a unique ``name``, a one-line ``description`` and ``judge()``."""

    name: ClassVar[str]
    description: ClassVar[str]

    def judge(self, answer: str, *, accepted: Sequence[str], distractors: Sequence[str], question: str = "") -> Verdict:
        """Rule on ``answer``, a free-form reply to ``question``: right when it gives one of ``accepted``
        (aliases of one answer) and names none of ``distractors``."""


def _tokens(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).casefold()
    # punctuation becomes a space, so "Ann's" still names "Ann" and "25,000" reads alike on both sides
    text = "".join(" " if unicodedata.category(char)[0] in "PS" else char for char in text)
    return [token for token in text.split() if token not in _ARTICLES]


def normalise(text: str) -> str:
    """``text`` casefolded, with punctuation as spaces, without articles and with single spaces."""
    return " ".join(_tokens(text))


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall of ``prediction`` against ``reference`` (normalised)."""
    predicted, expected = _tokens(prediction), _tokens(reference)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if not common:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def _reply_tokens(text: str) -> tuple[list[str], frozenset[int]]:
    """The reply's tokens (as :func:`_tokens` makes them) and the indices of those that open a sentence or clause."""
    tokens: list[str] = []
    starts = set()
    for piece in _BREAK.split(text):
        starts.add(len(tokens))
        tokens += _tokens(piece)
    return tokens, frozenset(starts)


def _denied(tokens: list[str], start: int, starts: frozenset[int] = frozenset()) -> bool:
    """Whether the words before ``tokens[start]`` deny it: "not", "never", "cannot" or a contraction ("isn t")
    right before it or before up to ``_DENIAL_REACH`` linking words ("can t be paris", "is not in paris"), in
    its own sentence or clause (``starts``: the tokens that open one)."""
    at = start
    while at and at not in starts:
        if tokens[at - 1] in _DENIALS:
            return True
        if at > 1 and tokens[at - 1] == "t" and tokens[at - 2] in CONTRACTED:
            return True
        if tokens[at - 1] not in _LINKING or start - at >= _DENIAL_REACH:
            return False
        at -= 1
    return False


def _spans(needle: list[str], haystack: list[str]) -> list[tuple[int, int]]:
    """Where ``needle`` occurs in ``haystack`` as a run of whole tokens."""
    width = len(needle)
    if not width:
        return []
    return [
        (start, start + width)
        for start in range(len(haystack) - width + 1)
        if haystack[start : start + width] == needle
    ]


class StringJudge:
    """Judges by string matching and token F1; no model, deterministic.

    ``f1_threshold``: the token F1 at which a reply that does not quote an accepted answer still counts.
    ``f1_min_words``: F1 applies only to accepted answers of at least this many words (after normalising);
    for short ones ("Ann Smith" against a reply "Ann Jones") partial overlap means a different answer."""

    name = "string"
    description = "Accepted answer named as whole words and no distractor named; token F1 for longer answers."

    def __init__(self, f1_threshold: float = 0.5, f1_min_words: int = 4):
        self.f1_threshold = f1_threshold
        self.f1_min_words = f1_min_words

    def judge(self, answer: str, *, accepted: Sequence[str], distractors: Sequence[str], question: str = "") -> Verdict:
        if not accepted:
            raise InvalidInput("a reply cannot be judged without accepted answers; give the probe 'answers'")
        reply, starts = _reply_tokens(answer)
        if not reply:
            return Verdict(False, "empty answer")
        accepted_tokens = [(text, _tokens(text)) for text in accepted]
        found = [
            (text, (start, end))
            for text, tokens in accepted_tokens
            for start, end in _spans(tokens, reply)
            if not _denied(reply, start, starts)  # "not all glon are femp" does not give it
        ]
        accepted_forms = {tuple(tokens) for _, tokens in accepted_tokens}
        named = []
        for distractor in distractors:
            tokens = _tokens(distractor)
            if tuple(tokens) in accepted_forms:
                continue  # a choice that is an accepted answer in other words is not a wrong answer
            # a distractor inside an accepted answer the reply gave ("Ann Smith" in "Ann Smith Jr") is not named,
            # nor one the reply denies ("Paris, not Oslo")
            spans = [(start, end) for start, end in _spans(tokens, reply) if not _denied(reply, start, starts)]
            if any(not any(s <= start and end <= e for _, (s, e) in found) for start, end in spans):
                named.append(distractor)
        f1, best = self._best_f1(answer, accepted)
        if found:
            matched = max(found, key=lambda item: item[1][1] - item[1][0])[0]
            if named:
                return Verdict(False, f"names {matched!r} but also {_listing(named)}", f1, matched, named)
            return Verdict(True, f"names {matched!r}", f1, matched, named)
        if named:
            return Verdict(False, f"names {_listing(named)}, not an accepted answer", f1, None, named)
        if best is not None and f1 >= self.f1_threshold:
            return Verdict(True, f"token F1 {f1:.2f} >= {self.f1_threshold} against {best!r}", f1, best, named)
        return Verdict(False, f"no accepted answer named (best token F1 {f1:.2f})", f1, None, named)

    def _best_f1(self, answer: str, accepted: Sequence[str]) -> tuple[float, str | None]:
        """The best token F1 of the reply, or of one of its sentences or clauses as negated as the answer, against
        an accepted answer long enough for F1 to mean something; with that answer (None when none is long
        enough)."""
        sentences = [piece for piece in _SENTENCE_END.split(answer) if piece.strip()]
        clauses = [clause for piece in sentences for clause in _CLAUSE_END.split(piece) if clause.strip()]
        pieces = [answer, *sentences, *clauses]
        best, best_answer = 0.0, None
        for text in accepted:
            if len(_tokens(text)) < self.f1_min_words:
                continue
            polarity, terms = negated(text), key_terms(text)
            score = max(
                (token_f1(piece, text) for piece in pieces if negated(piece) == polarity and _names(piece, terms)),
                default=0.0,
            )
            if best_answer is None or score > best:
                best, best_answer = score, text
        return best, best_answer


def _names(piece: str, terms: list[str]) -> bool:
    """Whether ``piece`` names the key terms of an accepted answer: all of them when it has three or fewer ("no
    nufimp are glaide" is not given by "No nufimp." nor by "All plait are glaide."), two thirds of a longer one's
    (a paraphrase may drop a word)."""
    found = set(key_terms(piece))
    present = sum(term in found for term in terms)
    return present == len(terms) if len(terms) <= 3 else present * 3 >= 2 * len(terms)


def _listing(names: Sequence[str]) -> str:
    return ("distractor " if len(names) == 1 else "distractors ") + ", ".join(repr(name) for name in names)


def distractors(probe: Probe) -> list[str]:
    """The probe's wrong answers: its multiple-choice form's other choices."""
    return [choice for index, choice in enumerate(probe.choices) if index != probe.answer_index]


def judge_probe(probe: Probe, answer: str, judge: Judge | None = None) -> Verdict:
    """``judge``'s verdict (the ``KADAPT_JUDGE`` one when None) on ``answer`` to an answer probe."""
    if not probe.chat_question or not probe.answers:
        raise InvalidInput(f"probe {probe.id} is MC-only (no chat question and accepted answers); it cannot be judged")
    judge = judge or get_judge()
    return judge.judge(answer, accepted=probe.answers, distractors=distractors(probe), question=probe.chat_question)


def get_judge(settings: Settings | None = None, plugins=None) -> Judge:
    """The judge ``KADAPT_JUDGE`` names, among those plugins registered."""
    from kadapt.plugins import get_plugins, pick
    from kadapt.settings import get_settings

    name = (settings or get_settings()).judge
    return pick((plugins or get_plugins()).contributions("register_judges"), name, "judge", about=" (KADAPT_JUDGE)")
