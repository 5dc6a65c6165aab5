"""Built-in probe generators: ``synthetic`` (exact probes from structured synthetic KBs), ``questions``
(cloze and model-written questions for arbitrary documents, with distractors drawn from other documents)
and ``relations`` (reversal and multi-hop questions for arbitrary documents, :mod:`.relations`); and the
built-in ``string`` judge of free-form answers to probes (:class:`kadapt.judge.StringJudge`).

The first two balance their probes against shortcuts: the correct answer's position cycles through the choices,
and every answer string is a distractor in other probes as often as it is correct, so a model that only
knows which answers are likely in general scores chance.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from kadapt.contracts import ProbeContext, ProbeDraft, SourceDocument, hookimpl, normalise, sentences
from kadapt.models.base import GenerationParams

from .relations import RelationProbes

__all__ = ["Candidate", "QuestionProbes", "RelationProbes", "SyntheticProbes", "balanced_probes", "key_term"]


class SyntheticProbes:
    """Probes rebuilt from the structured facts synthetic KBs carry in their documents' metadata
    (``kadapt bench generalization`` datasets); documents without such metadata get none."""

    name = "synthetic"
    description = "Exact probes from synthetic KBs' structured metadata (reversal, syllogism, semantic)."
    uses_model = False  # rule-based and cheap: every document

    def generate(self, documents: Sequence[SourceDocument], context: ProbeContext) -> Iterator[ProbeDraft]:
        from kadapt.contracts import probes_from_documents

        by_locator = {doc.locator: doc.id for doc in context.documents}
        pending = {doc.id for doc in documents}
        rows = [(doc.locator, doc.text, context.metadata.get(doc.id) or {}) for doc in context.documents]
        for probe in probes_from_documents(rows):
            source_ids = tuple(by_locator[name] for name in probe.get("source_ids", []) if name in by_locator)
            if not set(source_ids) & pending:
                continue
            yield ProbeDraft(
                probe["kind"],
                probe["question"],
                list(probe["choices"]),
                probe["answer_index"],
                source_ids,
                {"dataset": (context.metadata.get(source_ids[0]) or {}).get("synthetic", {}).get("dataset")}
                if source_ids
                else {},
                chat_question=probe.get("chat_question"),
                answers=list(probe.get("answers") or []),
            )


_NUMBER = re.compile(r"\b(?:[A-Z]{2,4}\s?)?\d[\d,.:]*(?:\s?(?:%|days?|weeks?|hours?|years?|months?|EUR|USD|GBP))?")
_NAME = re.compile(r"(?<!^)(?<![.!?]\s)\b[A-Z][a-z]+(?:[ -][A-Z][a-z]+)*\b")


@dataclass
class Candidate:
    document: SourceDocument
    sentence: str
    term: str
    kind: str  # "number" | "name"


def key_term(sentence: str) -> tuple[str, str] | None:
    """The sentence's most checkable term: its last number (with its unit), else its last capitalized name
    that does not open the sentence; None when it has neither."""
    numbers = [match.group(0).strip(" .,") for match in _NUMBER.finditer(sentence)]
    numbers = [number for number in numbers if any(char.isdigit() for char in number)]
    if numbers:
        return numbers[-1], "number"
    names = [match.group(0) for match in _NAME.finditer(sentence) if match.start() > 0]
    return (names[-1], "name") if names else None


QUESTION_SYSTEM = "Write one question that the statement answers. The answer must be the given answer."
QUESTION_EXAMPLES = [
    ("Employees get 25 days of paid leave per year.", "25 days", "How many days of paid leave do employees get?"),
    ("The Lisbon office is managed by Mira Patel.", "Mira Patel", "Who manages the Lisbon office?"),
    ("Hotel stays in London are capped at GBP 220 per night.", "GBP 220", "What is the hotel cap per night in London?"),
    ("Badges are issued by Facilities on the first day.", "Facilities", "Which team issues badges on the first day?"),
]


def _question_prompt(sentence: str, answer: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": QUESTION_SYSTEM}]
    for statement, term, question in QUESTION_EXAMPLES:
        messages += [
            {"role": "user", "content": f"Statement: {statement}\nAnswer: {term}"},
            {"role": "assistant", "content": question},
        ]
    return messages + [{"role": "user", "content": f"Statement: {sentence}\nAnswer: {answer}"}]


def _good_question(question: str, answer: str, sentence: str) -> bool:
    words = question.split()
    return (
        4 <= len(words) <= 30
        and question.endswith("?")
        and answer.lower() not in question.lower()
        and question.lower().rstrip("?") not in sentence.lower()
    )


class QuestionProbes:
    """For any document: per sentence with a checkable term (a number or a name), a ``verbatim`` cloze
    (the sentence up to the term) and a ``rephrase`` question the model writes about it, kept only when it
    ends in '?', is not a copy of the sentence and does not give the answer away. Distractors are the terms
    of other documents' probes of the same type (numbers with numbers, names with names).

    A ``rephrase`` probe's chat form is its question as written, answered by the term; a cloze has no
    natural question, so ``verbatim`` probes are MC-only."""

    name = "questions"
    description = "Cloze and model-written questions for any document; distractors from other documents."
    uses_model = True  # at most KADAPT_PROBE_DOCUMENTS documents per snapshot
    per_document = 3
    choices = 4

    def _candidates(self, documents: Sequence[SourceDocument], context: ProbeContext) -> list[Candidate]:
        out = []
        for document in documents:
            if (context.metadata.get(document.id) or {}).get("synthetic"):
                continue  # synthetic KBs get exact probes from the synthetic generator
            taken = 0
            for sentence in sentences(document.text, min_words=5, max_words=40):
                sentence = sentence.replace("**", "").replace("__", "")  # markdown emphasis is not content
                found = key_term(sentence)
                if found is None or taken >= self.per_document or sentence.find(found[0]) < 12:
                    continue
                out.append(Candidate(document, sentence, *found))
                taken += 1
        return out

    def generate(self, documents: Sequence[SourceDocument], context: ProbeContext) -> Iterator[ProbeDraft]:
        # distractors come from the whole KB, so a single changed document still gets proper probes
        pool = self._candidates(context.documents, context)
        pending = {document.id for document in documents}
        seen: set[str] = set()
        candidates = []
        for candidate in pool:  # each term is the answer of one probe at most, as it is a distractor elsewhere
            if candidate.document.id in pending and candidate.term.lower() not in seen:
                seen.add(candidate.term.lower())
                candidates.append(candidate)
        if not candidates:
            return
        prompts = [_question_prompt(candidate.sentence, candidate.term) for candidate in candidates]
        completions = context.model.generate_batch(prompts, GenerationParams(max_tokens=40))
        verbatim: list[tuple[Candidate, str, str | None]] = []
        rephrase: list[tuple[Candidate, str, str | None]] = []
        for candidate, completion in zip(candidates, completions, strict=True):
            cloze = candidate.sentence[: candidate.sentence.find(candidate.term)].rstrip()
            verbatim.append((candidate, cloze, None))
            question = completion.text.strip().splitlines()[0].strip() if completion.text.strip() else ""
            if _good_question(question, candidate.term, candidate.sentence):
                rephrase.append((candidate, f"Question: {question}\nAnswer:", question))
        yield from balanced_probes("verbatim", verbatim, pool, self.choices)
        yield from balanced_probes("rephrase", rephrase, pool, self.choices)


def balanced_probes(
    kind: str, items: list[tuple[Candidate, str, str | None]], pool: list[Candidate], width: int
) -> Iterator[ProbeDraft]:
    """Probes whose distractors are the next terms of the same type (numbers with numbers, names with
    names) in a cycle over the KB's terms: across a KB, each term is a distractor about as often as it
    is an answer, and the answer's position cycles through the choices. An item's chat question (None for
    none) becomes the probe's chat form, answered by its term, unless a distractor reads the same once
    normalised ("25 days" and "25-days"): the judge could not tell them apart."""
    made = 0  # probes so far, over both term types, so answer positions cycle evenly across the kind
    for term_kind in ("number", "name"):
        terms: list[str] = []
        for candidate in pool:
            if candidate.kind == term_kind and candidate.term.lower() not in (term.lower() for term in terms):
                terms.append(candidate.term)
        count = min(width, len(terms))
        if count < 2:
            continue
        group = [item for item in items if item[0].kind == term_kind]
        for candidate, question, chat_question in group:
            start = next(index for index, term in enumerate(terms) if term.lower() == candidate.term.lower())
            distractors = [terms[(start + step) % len(terms)] for step in range(1, count)]
            position = made % count
            made += 1
            choices = distractors[:position] + [candidate.term] + distractors[position:]
            if chat_question and normalise(candidate.term) in {normalise(other) for other in distractors}:
                chat_question = None
            yield ProbeDraft(
                kind,
                question,
                choices,
                position,
                (candidate.document.id,),
                {"sentence": candidate.sentence},
                chat_question=chat_question,
                answers=[candidate.term] if chat_question else [],
            )


@hookimpl
def register_probe_generators(register):
    register(SyntheticProbes())
    register(QuestionProbes())
    register(RelationProbes())


@hookimpl
def register_judges(register):
    from kadapt.contracts import StringJudge

    register(StringJudge())
