"""Citations that quote: for each document an answer drew on, the sentence of it that best supports the answer.

An icl answer is written from the documents in its prompt (:class:`kadapt.serving.PreparedChat`). Once the answer
is known, :func:`cite` scores every sentence of those documents by the key terms (:func:`kadapt.text.key_terms`)
it shares with the answer — terms the answer adds to the question weigh most, terms of the question least — and
cites the documents whose best sentence shares at least one term with the answer, quoting that sentence. A quote
is always a verbatim slice of the document's text (whitespace and line breaks as the document has them), never a
normalised copy, so a reader can find it in the document.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from kadapt.text import key_terms, sentences

__all__ = ["Citation", "Passage", "cite", "supporting_quote", "verbatim"]

MAX_CITATIONS = 3

# what a shared term is worth: one the answer adds (not in the question), one it repeats from the question, and one
# only the question has (it still says which document the question is about)
_NEW_TERM, _ECHOED_TERM, _QUESTION_TERM = 2.0, 1.0, 0.5


@dataclass(frozen=True)
class Passage:
    """A document's text as it was put in the prompt, under the index its fence and source carry."""

    index: int
    document_id: str
    locator: str
    title: str
    text: str


@dataclass(frozen=True)
class Citation:
    """A cited document and the sentence of it, quoted verbatim, that best supports the answer."""

    index: int
    document_id: str
    locator: str
    title: str
    quote: str


def verbatim(text: str, sentence: str) -> str | None:
    """The slice of ``text`` that reads as ``sentence`` word for word (any whitespace between the words), or None.

    :func:`kadapt.text.sentences` joins a sentence's lines with single spaces and drops a heading's or bullet's
    marker: the quote is taken from the document itself, not from that normalised copy."""
    words = sentence.split()
    if not words:
        return None
    found = re.search(r"\s+".join(re.escape(word) for word in words), text)
    return found.group() if found else None


def _score(sentence: str, answer: set[str], question: set[str]) -> tuple[float, int]:
    """(support, answer terms shared) of one sentence."""
    terms = set(key_terms(sentence))
    shared = terms & answer
    new = shared - question
    support = _NEW_TERM * len(new) + _ECHOED_TERM * len(shared - new) + _QUESTION_TERM * len(terms & question - answer)
    return support, len(shared)


def supporting_quote(text: str, answer: str, question: str = "") -> tuple[str, float] | None:
    """The sentence of ``text`` (verbatim) that best supports ``answer`` to ``question``, with its support score;
    None when no sentence shares a key term with the answer. Ties go to the earlier sentence."""
    answer_terms, question_terms = set(key_terms(answer)), set(key_terms(question))
    if not answer_terms:
        return None
    best: tuple[str, float] | None = None
    for sentence in sentences(text, min_words=1):
        support, shared = _score(sentence, answer_terms, question_terms)
        if not shared or (best is not None and support <= best[1]):
            continue
        quote = verbatim(text, sentence)
        if quote is not None:
            best = (quote, support)
    return best


def cite(passages: Iterable[Passage], answer: str, question: str = "", *, limit: int = MAX_CITATIONS) -> list[Citation]:
    """The documents ``answer`` drew on, best supported first (at most ``limit``), each with its supporting sentence.

    A document is cited when its best sentence shares a key term with the answer and scores at least half as
    much as the best-supported document's: a document that shares one common word with a long answer is not."""
    scored = []
    for passage in passages:
        found = supporting_quote(passage.text, answer, question)
        if found is not None:
            scored.append((found[1], passage, found[0]))
    if not scored:
        return []
    top = max(support for support, _, _ in scored)
    scored.sort(key=lambda item: (-item[0], item[1].index))
    return [
        Citation(passage.index, passage.document_id, passage.locator, passage.title, quote)
        for support, passage, quote in scored[:limit]
        if support >= top / 2
    ]
