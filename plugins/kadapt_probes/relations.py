"""``relations``: reversal and multi-hop probes for arbitrary documents, written without a model.

Entities are found by :func:`kadapt.entities.entity_units` (capitalised names, quoted titles, numbers with
their units) in the sentences of :func:`kadapt.text.sentences`.

- ``reversal``: a sentence that names an entity first, as its subject ("Orla Vantreight designed the glass
  footbridge …", "Since 2011, Yusra Delacorte has run …", "The annual Harbour Lantern Parade in Galway was
  started by …"), becomes a question that gives the rest of the sentence and asks for that entity ("Who or
  what designed the glass footbridge …?"): the direction the reversal curse hides.
- ``multi-hop``: two documents that name the same entity. The question describes the entity only through a
  sentence of one document ("[X] is the name missing from "Enrol the [X] app …"") and asks for another
  entity of a sentence of the other document that names it; answering takes a fact of each.

Every probe passes three checks, enforced here (:func:`answerable`, :func:`really_false`, the balancing of
:func:`_arrange`):

- **answerable from its sources**, model-free: the answer is quoted from a source sentence and the
  question's content words come from the source documents. Not icl with the embedded model: at 135M its ICL
  is shortcut-level (STACK.md), so its verdict would reject good probes and keep bad ones by chance, and it
  would cost a model run per probe;
- **distractors really false**: entities of the answer's type from other documents, never named in the
  source documents, and named by no sentence of the KB that also carries most of the question's content
  words (which could make them a right answer);
- **a floor near chance**: the answer's position cycles through the choices, and its length rank among the
  choices cycles too (shortest, second, third, longest), so position and length shortcuts score ~0.25.

Both kinds get a chat form: the question as asked, answered by the entity (with a shorter alias for a name
of three words or more, "Anselm Okonkwo-Bright" for "Composer Anselm Okonkwo-Bright").
"""

from __future__ import annotations

import bisect
import functools
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from kadapt.contracts import (
    MONTHS,
    STOPWORDS,
    ProbeContext,
    ProbeDraft,
    SourceDocument,
    entity_units,
    key_terms,
    normalise,
    sentences,
)

__all__ = ["RelationProbes", "answerable", "mentions", "really_false", "reversal_question"]

_PREPOSITIONS = frozenset(
    "in on at of for with by from to into onto over under about after before since during than and or but as "
    "off out up down through across between within without via per".split()
)
_RELATIVES = frozenset({"who", "which", "that"})
_DETERMINERS = frozenset({"the", "a", "an", "this", "our", "its", "their"})
_QUOTES = "\"'“”‘’"
_NUMBER = re.compile(r"^(?:[$€£]|(?:EUR|USD|GBP|CHF|JPY)\s)?\d")
# template words of the questions: not content a source must carry
_TEMPLATE = frozenset(key_terms("Who or what is the name missing from fill in [X] [?] in"))


@dataclass(frozen=True)
class Mention:
    text: str  # the entity as a choice shows it (no quotes, no trailing punctuation)
    kind: str  # "name" | "title" | "number:<shape>" (a time, an ordinal, an amount, a year, a unit's name)
    unit: int  # its index among the sentence's units


def _clean(unit: str) -> str:
    return unit.strip(" .,;:!?()[]").strip(_QUOTES).strip(" .,;:!?")


def _shape(number: str) -> str:
    """What a number measures, so distractors are of its kind: '09:00' with times, '15th' with ordinals,
    'EUR 35' with amounts, '600 km' with lengths (the unit word), '2019' with years."""
    words = number.split()
    if ":" in number:
        return "time"
    if re.fullmatch(r"\d+(?:st|nd|rd|th)", words[0]):
        return "ordinal"
    if not words[0][:1].isdigit():
        return "amount"
    if any(word.lower() in MONTHS for word in words):
        return "date"
    if len(words) > 1:
        return words[-1].lower().rstrip("s")
    return "year" if re.fullmatch(r"1[89]\d\d|20\d\d", number) else "plain"


def _kind(unit: str, index: int) -> str | None:
    core = unit.strip(" .,;:!?()[]")
    if core[:1] in _QUOTES and len(core) > 2:
        return "title"
    if _NUMBER.match(core):
        return "number:" + _shape(core)
    words = core.split()
    if not words or not words[0][:1].isupper() or core.lower() in STOPWORDS:
        return None
    if len(words) == 1 and (index == 0 or words[0].lower() in STOPWORDS):
        return None  # a sentence's first word is capitalised anyway
    return "name"


def mentions(sentence: str) -> tuple[list[str], list[Mention]]:
    """The sentence's units (:func:`entity_units` of it without its final stop) and the entities among them
    (a number next to another number, a piece of a phone number, is none)."""
    units = entity_units(sentence.rstrip(".!? "))
    found = []
    for index, unit in enumerate(units):
        kind = _kind(unit, index)
        if (kind or "").startswith("number") and any(
            0 <= other < len(units) and (_kind(units[other], other) or "").startswith("number")
            for other in (index - 1, index + 1)
        ):
            continue
        if kind and _clean(unit):
            found.append(Mention(_clean(unit), kind, index))
    return units, found


class _Vocabulary:
    """What tells a name from a heading run into a sentence ("Wellbeing⏎Free sessions …" reads "Wellbeing Free
    sessions …"): a name of several words is written on one line somewhere in the KB; and words the KB also
    writes in lowercase are common words: a name that is one, or that is named once with one in it, is none."""

    def __init__(self, texts: Sequence[str]):
        words = re.findall(r"[A-Za-z][A-Za-z'-]*", " ".join(texts))
        self.lowercase = {word for word in words if word.islower()}
        # how often each unit is written within one line (counted once, not searched for per name)
        self.on_a_line = Counter(
            _clean(unit) for text in texts for line in text.splitlines() for unit in entity_units(line.strip())
        )

    def is_name(self, mention: Mention) -> bool:
        if mention.kind != "name":
            return True
        words = mention.text.split()
        common = [word for word in words if word.lower() in self.lowercase]
        if len(words) == 1:
            return not common
        count = self.on_a_line[mention.text]
        return count > 0 and (not common or count > 1)


@functools.lru_cache(maxsize=65536)
def _padded(text: str) -> str:
    """`` text `` normalised (:func:`kadapt.judge.normalise`), cached: documents are searched many times."""
    return f" {normalise(text)} "


@functools.lru_cache(maxsize=65536)
def _terms(text: str) -> frozenset[str]:
    return frozenset(key_terms(text))


def _contains(text: str, phrase: str) -> bool:
    return _padded(phrase) in _padded(text)


@functools.lru_cache(maxsize=65536)
def _content(question: str) -> tuple[str, ...]:
    return tuple(term for term in key_terms(question) if term not in _TEMPLATE)


def answerable(question: str, answer: str, sources: Sequence[str], share: float = 0.8) -> bool:
    """Model-free answerability: the answer is stated in a source text, the question does not give it away,
    and at least ``share`` of the question's content words come from the sources."""
    if not any(_contains(text, answer) for text in sources) or _contains(question, answer):
        return False
    wanted = _content(question)
    present = set(key_terms(" ".join(sources)))
    return bool(wanted) and sum(term in present for term in wanted) >= share * len(wanted)


def really_false(distractor: str, question: str, sources: Sequence[str], kb_sentences: Sequence[str]) -> bool:
    """Whether ``distractor`` is a wrong answer: the source documents never name it, and no sentence of the
    KB names it together with half or more of the question's content words."""
    if any(_contains(text, distractor) for text in sources):
        return False
    wanted = set(_content(question))
    for sentence in kb_sentences:
        if _contains(sentence, distractor) and len(wanted & _terms(sentence)) >= 0.5 * len(wanted):
            return False
    return True


def reversal_question(sentence: str, vocabulary: _Vocabulary | None = None) -> tuple[str, Mention] | None:
    """("Who or what <rest of the sentence>?", the entity) when the sentence names an entity first, as its
    subject; None otherwise. The subject may follow a comma-closed opening ("Since 2011, …", with one role
    word: "…, mountaineer Caspian Thorley"), a determiner and lowercase modifiers ("The annual …"), or "It was"
    ("It was Florian Zakarian who translated …"); an apposition after it is skipped ("X, a former jockey,
    now trains …")."""
    if sentence.rstrip().endswith("?"):
        return None
    units, found = mentions(sentence)
    for entity in found:  # the first entity that stands as a subject (an opening may name others before it)
        if entity.kind in ("name", "title") and (vocabulary is None or vocabulary.is_name(entity)):
            question = _subject_question(units, entity)
            if question:
                return question, entity
    return None


def _subject_question(units: list[str], entity: Mention) -> str | None:
    prefix = units[: entity.unit]
    what = "Who or what"
    cleft = False
    if not prefix:
        pass
    elif [unit.lower() for unit in prefix] in (["it", "was"], ["it", "is"]):
        cleft = True
    elif prefix[-1].endswith(","):
        pass
    elif len(prefix) >= 2 and prefix[-2].endswith(",") and prefix[-1].isalpha() and prefix[-1].islower():
        if prefix[-1] in STOPWORDS:
            return None
    elif prefix[0].lower() in _DETERMINERS and len(prefix) <= 4:
        modifiers = prefix[1:]
        if any(not word[:1].islower() or word.strip(",") in _PREPOSITIONS | STOPWORDS for word in modifiers):
            return None
        what = "What"
    else:
        return None
    if entity.kind == "title":
        what = "What"
    rest = units[entity.unit + 1 :]
    if units[entity.unit].endswith(","):  # an apposition: up to its closing comma
        close = next((index for index, unit in enumerate(rest) if unit.endswith(",")), None)
        if close is None or close > 12:
            return None
        rest = rest[close + 1 :]
    elif len(rest) > 2 and rest[0] in _PREPOSITIONS and rest[1][:1].isupper():
        rest = rest[2:]  # the subject's own place: "The annual Harbour Lantern Parade in Galway was started …"
    cut = next((index for index, unit in enumerate(rest) if unit.endswith(";")), None)
    if cut is not None:  # "X repairs organs; his best-known …": the clause about X
        rest = rest[: cut + 1]
    if rest and rest[0].lower() in _RELATIVES:
        rest = rest[1:]
    elif cleft:
        return None
    if len(rest) < 3 or not rest[0].isalpha() or not rest[0].islower() or rest[0] in _PREPOSITIONS:
        return None
    if rest[0] in _RELATIVES or len(_content(" ".join(rest))) < 2:
        return None
    return f"{what} {' '.join(rest).rstrip(',;:')}?"


def _aliases(entity: Mention) -> list[str]:
    words = entity.text.split()
    return [entity.text, " ".join(words[1:])] if entity.kind == "name" and len(words) >= 3 else [entity.text]


@dataclass
class _Item:
    kind: str
    question: str  # the chat question; the MC form is "Question: …\nAnswer:"
    answer: Mention
    answers: list[str]
    source_ids: tuple[str, ...]
    sources: list[str]  # the source documents' texts
    provenance: dict


def _nearest(answer: str, ordered: Sequence[str], fits, role: bool, enough: int) -> list[str]:
    """Up to ``enough`` entities of ``ordered`` (sorted by length) on each side of the answer's length, nearest
    first, that pass ``fits(entity, role)``: the checks run on a few candidates, not on the whole KB."""
    start = bisect.bisect_left(ordered, len(answer), key=len)
    found: list[str] = []
    for side in (range(start - 1, -1, -1), range(start, len(ordered))):
        taken = 0
        for index in side:
            if taken >= enough:
                break
            if fits(ordered[index], role):
                found.append(ordered[index])
                taken += 1
    return found


def _sides(answer: str, pool: Sequence[str], used: Counter) -> tuple[list[str], list[str], list[str]]:
    """The pool's choices shorter than, as long as and longer than the answer, nearest (least used) first."""

    def order(choices):
        return sorted(choices, key=lambda p: (abs(len(p) - len(answer)), used[p], p))

    return (
        order(p for p in pool if len(p) < len(answer)),
        order(p for p in pool if len(p) == len(answer)),
        order(p for p in pool if len(p) > len(answer)),
    )


def _feasible(answer: str, pool: Sequence[str], width: int) -> list[int]:
    """The answer's possible length ranks among ``width`` choices drawn from ``pool`` (a choice as long as
    the answer may stand on either side)."""
    shorter, equal, longer = (len(side) for side in _sides(answer, pool, Counter()))
    return [
        rank
        for rank in range(width)
        if shorter + equal >= rank and longer + equal >= width - 1 - rank and shorter + equal + longer >= width - 1
    ]


def _arrange(answer: str, pool: Sequence[str], rank: int, position: int, width: int, used: Counter) -> list[str]:
    """The choices: ``rank`` distractors shorter than the answer (or as long) and the rest longer (or as
    long), nearest in length (least used first), with the answer at ``position``."""
    shorter, equal, longer = _sides(answer, pool, used)
    low = shorter[:rank]
    low += equal[: rank - len(low)]
    spare = [choice for choice in equal if choice not in low]
    high = longer[: width - 1 - rank]
    high += spare[: width - 1 - rank - len(high)]
    distractors = low + high
    used.update(distractors)
    distractors.sort(key=lambda text: (sum(map(ord, text)) * 7) % 97)  # a fixed order unrelated to length
    return distractors[:position] + [answer] + distractors[position:]


class RelationProbes:
    """``reversal`` probes (ask for the entity a sentence names first, given the rest) and ``multi-hop``
    probes (link a sentence of one document to a sentence of another that names the same entity) for any
    document, with a chat form; see the module's docstring for their checks."""

    name = "relations"
    description = "Reversal and multi-hop questions for any document (entity heuristics, no model)."
    uses_model = False  # rule-based: every document
    choices = 4
    per_document = 2  # probes of each kind per document at most
    max_bridge_documents = 3  # an entity named by more documents does not identify one of them

    def generate(self, documents: Sequence[SourceDocument], context: ProbeContext) -> Iterator[ProbeDraft]:
        real = [doc for doc in context.documents if not (context.metadata.get(doc.id) or {}).get("synthetic")]
        pending = {doc.id for doc in documents}
        split = {doc.id: sentences(doc.text, min_words=5, max_words=40) for doc in real}
        split = {doc_id: [s.replace("**", "").replace("__", "") for s in found] for doc_id, found in split.items()}
        vocabulary = _Vocabulary([doc.text for doc in real])
        pools: dict[str, dict[str, set[str]]] = {}  # entity kind -> entity -> documents naming it
        named_in: dict[str, list[str]] = {}  # entity -> the sentences naming it
        subjects: set[str] = set()  # who-question answers: in a biography, the people
        for doc_id, found in split.items():
            for sentence in found:
                for mention in mentions(sentence)[1]:
                    if vocabulary.is_name(mention):
                        pools.setdefault(mention.kind, {}).setdefault(mention.text, set()).add(doc_id)
                        named_in.setdefault(mention.text, []).append(sentence)
                reversal = reversal_question(sentence, vocabulary)
                if reversal and reversal[0].startswith("Who"):
                    subjects.add(reversal[1].text)
        by_length = {
            kind: sorted(entities, key=lambda entity: (len(entity), entity)) for kind, entities in pools.items()
        }
        items = [
            *self._reversals(real, pending, split, vocabulary),
            *self._multi_hops(real, pending, split, pools, vocabulary),
        ]
        kept: list[tuple[_Item, list[str]]] = []
        for item in items:
            if not answerable(item.question, item.answer.text, item.sources):
                continue
            aliases = {normalise(alias) for alias in item.answers}
            who = item.question.startswith("Who")

            def fits(entity: str, role: bool, item=item, aliases=aliases, who=who) -> bool:
                return (
                    not pools[item.answer.kind][entity] & set(item.source_ids)
                    and normalise(entity) not in aliases
                    and (not role or (entity in subjects) == who)
                    and really_false(entity, item.question, item.sources, named_in.get(entity, []))
                )

            # distractors in the answer's role where enough have it (people for "who", others for "what"),
            # else any of its kind
            for role in (item.kind == "reversal", False):
                pool = _nearest(item.answer.text, by_length.get(item.answer.kind, []), fits, role, self.choices + 2)
                if _feasible(item.answer.text, pool, self.choices):
                    kept.append((item, pool))
                    break
        yield from self._balanced(kept)

    def _reversals(self, real, pending, split, vocabulary) -> Iterator[_Item]:
        for doc in real:
            if doc.id not in pending:
                continue
            taken = 0
            for sentence in split[doc.id]:
                found = reversal_question(sentence, vocabulary)
                if found is None or taken >= self.per_document:
                    continue
                question, entity = found
                taken += 1
                yield _Item(
                    "reversal", question, entity, _aliases(entity), (doc.id,), [doc.text], {"sentence": sentence}
                )

    def _multi_hops(self, real, pending, split, pools, vocabulary) -> Iterator[_Item]:
        by_id = {doc.id: doc for doc in real}
        taken: Counter[str] = Counter()
        pairs: set[tuple[str, str]] = set()
        asked: set[tuple[str, str]] = set()  # (sentence, answer): one probe each, whichever the bridge
        for bridge, named_by in sorted(pools.get("name", {}).items()) + sorted(pools.get("title", {}).items()):
            if not 2 <= len(named_by) <= self.max_bridge_documents:
                continue
            for first in sorted(named_by):
                for second in sorted(named_by - {first}):
                    if (first, second) in pairs or not {first, second} & pending:
                        continue
                    if taken[second] >= self.per_document:
                        continue
                    item = self._hop(bridge, by_id[first], by_id[second], split, vocabulary)
                    if item and (item.provenance["sentences"][1], item.answer.text) not in asked:
                        asked.add((item.provenance["sentences"][1], item.answer.text))
                        pairs.add((first, second))
                        taken[second] += 1
                        yield item

    def _hop(self, bridge: str, first: SourceDocument, second: SourceDocument, split, vocabulary) -> _Item | None:
        described = next((s for s in split[first.id] if _contains(s, bridge) and len(_content(s)) >= 3), None)
        if described is None:
            return None
        for sentence in split[second.id]:
            if not _contains(sentence, bridge) or sentence.rstrip().endswith("?"):
                continue
            targets = [
                mention
                for mention in mentions(sentence)[1]
                if vocabulary.is_name(mention)
                and normalise(mention.text) != normalise(bridge)
                and not _contains(mention.text, bridge)
                and not _contains(bridge, mention.text)
                and not _contains(first.text, mention.text)
            ]
            if not targets:
                continue
            target = targets[-1]
            clue = _blank(described, bridge, "[X]")
            asked = _blank(_blank(sentence, bridge, "[X]"), target.text, "[?]")
            if "[X]" not in clue or "[?]" not in asked or "[X]" not in asked:
                continue
            question = f'[X] is the name missing from "{clue}" What is [?] in "{asked}"?'
            return _Item(
                "multi-hop",
                question,
                target,
                [target.text],
                (first.id, second.id),
                [first.text, second.text],
                {"sentences": [described, sentence], "bridge": bridge},
            )
        return None

    def _balanced(self, kept: list[tuple[_Item, list[str]]]) -> Iterator[ProbeDraft]:
        for kind in ("reversal", "multi-hop"):
            group = [(item, pool) for item, pool in kept if item.kind == kind]
            ranks: dict[int, int] = {}
            use: Counter[int] = Counter()
            options = {i: _feasible(item.answer.text, pool, self.choices) for i, (item, pool) in enumerate(group)}
            for i in sorted(options, key=lambda i: (len(options[i]), i)):  # most constrained first
                ranks[i] = min(options[i], key=lambda rank: (use[rank], rank))
                use[ranks[i]] += 1
            used: Counter[str] = Counter()
            for i, (item, pool) in enumerate(group):
                position = i % self.choices
                choices = _arrange(item.answer.text, pool, ranks[i], position, self.choices, used)
                yield ProbeDraft(
                    kind,
                    f"Question: {item.question}\nAnswer:",
                    choices,
                    position,
                    item.source_ids,
                    item.provenance,
                    chat_question=item.question,
                    answers=item.answers,
                )


def _blank(sentence: str, phrase: str, mark: str) -> str:
    """``sentence`` with its first whole-word occurrence of ``phrase`` (quotes included) replaced by ``mark``."""
    pattern = re.compile(rf"[{_QUOTES}]?(?<![\w-]){re.escape(phrase)}(?![\w-])[{_QUOTES}]?")
    return pattern.sub(mark, sentence, count=1)
