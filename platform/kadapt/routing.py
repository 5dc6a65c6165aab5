"""Adapter routing: a question that is not about the KB is answered by the base model, not the adapter.

An adapter trained on a KB's facts answers general questions worse than the base model ("What is the tallest
mountain in the world?" -> a mountain of the KB): replay slows the drift, it does not stop it. So a chat on a KB
served from an adapter goes to the adapter only when the question is about the KB, by any of three signals:

- **the adapter recognises it**: the question's log-likelihood (its tokens, after the chat's system prompt) with
  the adapter minus without, summed over its tokens, is at least the adapter's threshold. The threshold is
  calibrated once per adapter on generic prompts (the packaged replay prompts): the highest gain any of them gets,
  plus :data:`MARGIN` nats. A question about the KB's people and terms gains tens of nats; a general question
  gains a few at most.
- **it names something of the KB**: the question mentions, in any case, a capitalised name ("Rosalind Achterberg",
  "Keel Beach") of the documents the adapter was trained on;
- **it uses one of the KB's rare words** (:func:`kb_terms`): "brarf", "footbridge".

A conversation's last four user turns count: a follow-up ("When was she born?") stays with the adapter when an
earlier turn was about the KB.

The calibration, the names and the rare words are written next to the adapter (``routing.json``) when it is
trained; an adapter without them is calibrated at its first routed question (names and words unknown). Routing
needs a backend that scores (the in-process transformers backend); elsewhere every question goes to the adapter.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from kadapt.entities import entity_units
from kadapt.models.base import ChatMessage, Model, ScoringNotSupported
from kadapt.paths import write_atomic
from kadapt.text import STOPWORDS

__all__ = [
    "MARGIN",
    "ROUTING_FILE",
    "Gate",
    "Route",
    "calibrate",
    "gate_for",
    "kb_names",
    "kb_terms",
    "names_in",
    "prefetch_routes",
    "question_gains",
    "route",
    "terms_in",
]

ROUTING_FILE = "routing.json"
# nats above the generic prompts' highest gain: on samples/biographies the general questions of
# kadapt.forgetting (not replay prompts) gained at most 1.6 nats more than the highest replay prompt
MARGIN = 2.0
_MAX_NAMES = 50_000  # a large KB's further names are left to the likelihood signal
_MAX_NAME_CHARS = 200
_TURNS = 4  # the user turns of a conversation that count: its question and the three before
_logger = logging.getLogger(__name__)
_LINE_MARKER = re.compile(r"^(?:[#>*+|-]+|\d+[.)])\s*")  # a heading's, bullet's, quote's or numbered item's marker


@dataclass(frozen=True)
class Gate:
    """An adapter's routing data: the gain threshold (nats) and the KB names it was trained on (lower case)."""

    threshold: float
    names: frozenset[str] = frozenset()
    terms: frozenset[str] = frozenset()  # the KB's rare words (kb_terms)

    def to_json(self) -> str:
        return json.dumps({"threshold": self.threshold, "names": sorted(self.names), "terms": sorted(self.terms)})


@dataclass(frozen=True)
class Route:
    """Where a question goes: to the adapter or to the base model, and why."""

    to_adapter: bool
    gain: float | None  # nats; None when a name decided without scoring
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def _name(unit: str) -> str:
    core = unit.strip(".,;:!?()[]\"'“”").removesuffix("'s").removesuffix("’s")
    return " ".join(core.split()).lower()


def _sentences(text: str) -> list[str]:
    """``text``'s sentences; a line (a heading, a bullet, a table row) starts afresh like one, without its marker."""
    return [_LINE_MARKER.sub("", sentence) for sentence in re.split(r"(?<=[.!?])\s+|\s*\n\s*", text)]


def _names(text: str, *, skip_first: bool) -> set[str]:
    """Capitalised units of ``text`` that are not function words ("Rosalind Achterberg", "Keel Beach"); the
    first word of each sentence only when it is part of a longer name (skip_first)."""
    found = set()
    for sentence in _sentences(text):
        for position, unit in enumerate(entity_units(sentence)):
            name = _name(unit)
            if not name or not unit[:1].isupper() or name in STOPWORDS or len(name) < 3:
                continue
            if unit.strip(".,;:!?()[]\"'“”").isupper() and len(name) <= 4:  # an acronym (API, USA): too common
                continue
            if skip_first and position == 0 and " " not in name:
                continue
            found.add(name)
    return found


_WORD = re.compile(r"(?<![\w'-])[a-z][a-z'-]{3,}(?![\w'-])")


def kb_terms(model: Model, documents: Iterable[str]) -> frozenset[str]:
    """The KB's rare words: written in lower case in its documents, or first in a sentence (a capitalised word
    inside a sentence is a name, :func:`kb_names`), at least four letters, no function word, and split by the
    model's tokenizer into two or more pieces (a word the tokenizer knows whole is common English): "brarf",
    "kridirf", "footbridge" — what a question about made-up or specialist things shares with the KB when it names
    no capitalised name. Empty where the model has no tokenizer."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return frozenset()
    words: set[str] = set()
    for text in documents:
        for sentence in _sentences(text):
            first = re.match(r"[A-Za-z][a-z'-]{3,}(?![\w'-])", sentence)  # a sentence's first word, in any case
            if first:
                words.add(first.group().lower())
            words.update(match.group() for match in _WORD.finditer(sentence))  # lower case elsewhere
        if len(words) >= _MAX_NAMES:
            break
    terms = {
        word
        for word in words
        if word not in STOPWORDS and len(tokenizer(" " + word, add_special_tokens=False).input_ids) >= 2
    }
    return frozenset(sorted(terms)[:_MAX_NAMES])


def terms_in(question: str, terms: frozenset[str]) -> list[str]:
    """The KB's rare words that ``question`` uses, in any case."""
    return sorted({word.lower() for word in re.findall(r"[A-Za-z][A-Za-z'-]{3,}", question)} & terms)


def kb_names(documents: Iterable[str]) -> frozenset[str]:
    """The capitalised names in a KB's documents (at most :data:`_MAX_NAMES`)."""
    names: set[str] = set()
    for text in documents:
        names |= _names(text, skip_first=True)
        if len(names) >= _MAX_NAMES:
            break
    return frozenset(sorted(name for name in names if len(name) <= _MAX_NAME_CHARS)[:_MAX_NAMES])


def names_in(question: str, names: frozenset[str]) -> list[str]:
    """The KB names that ``question`` mentions, in any case ("tell me about orla vantreight")."""
    words = [_name(word) for word in question.split()]
    words = [word for word in words if word]
    found = {
        " ".join(words[start : start + size])
        for size in range(1, 5)
        for start in range(len(words) - size + 1)
        if " ".join(words[start : start + size]) in names
    }
    return sorted(found)


def _split(model: Model, messages: Sequence[ChatMessage]) -> tuple[str, str]:
    """(the chat's text up to its last message, that message) as the model's chat template writes them."""
    render = getattr(model, "format", None)
    if render is None:
        raise ScoringNotSupported("the model backend does not expose its chat template")
    text, turn = render(messages), messages[-1]["content"].strip()
    at = text.rfind(turn) if turn else -1
    if at < 0:
        raise ScoringNotSupported("the chat template does not keep the message verbatim")
    return text[:at], turn


def question_gains(
    model: Model, chats: Sequence[Sequence[ChatMessage]], adapter_id: str, adapter_path: str
) -> list[float]:
    """For each chat, its last message's summed log-likelihood with the adapter minus without it (nats). Raises
    ScoringNotSupported where the backend cannot score.

    Gains are remembered per model, adapter folder (published adapters never change) and exact prompt, so a chat
    whose gain :func:`prefetch_routes` scored in a batch is not scored again."""
    items = [(prefix, [turn]) for prefix, turn in (_split(model, messages) for messages in chats)]
    owner = (getattr(model, "model_id", None), adapter_path)
    keys = [(owner, prefix, turn[0]) for prefix, turn in items]
    with _gains_lock:
        known = {key: _gains[key] for key in keys if key in _gains}
    missing: dict[tuple, tuple[str, list[str]]] = {}  # each prompt scored once
    for key, item in zip(keys, items, strict=True):
        if key not in known:
            missing.setdefault(key, item)
    missing_items = list(missing.values())
    if missing_items:
        with_adapter = model.score_batch(missing_items, adapter_id=adapter_id, adapter_path=adapter_path)
        without = model.score_batch(missing_items)
        scored = {
            (owner, prefix, turn[0]): a[0] - b[0]
            for (prefix, turn), a, b in zip(missing_items, with_adapter, without, strict=True)
        }
        known |= scored
        with _gains_lock:
            _gains.update(scored)
            while len(_gains) > _CACHED_GAINS:
                _gains.popitem(last=False)
    return [known[key] for key in keys]


_gains: OrderedDict[tuple, float] = OrderedDict()  # (model, adapter folder), prompt, question -> gain
_CACHED_GAINS = 4096
_gains_lock = threading.Lock()


def _asked(messages: Sequence[ChatMessage], gate: Gate) -> tuple[Route | None, list[Sequence[ChatMessage]]]:
    """(the route when a last user turn names something of the KB or uses one of its rare words, else None; the
    chats up to each of those turns, whose gains decide otherwise)."""
    turns = [index for index, message in enumerate(messages) if message["role"] == "user"][-_TURNS:]
    for index in reversed(turns):
        named = names_in(messages[index]["content"], gate.names)
        if named:
            return Route(True, None, f"names {named[0]!r} of the KB"), []
        termed = terms_in(messages[index]["content"], gate.terms)
        if termed:
            return Route(True, None, f"uses the KB's word {termed[0]!r}"), []
    return None, [messages[: index + 1] for index in turns]


def prefetch_routes(
    model: Model, chats: Sequence[Sequence[ChatMessage]], adapter_id: str, adapter_path: str, system: str
) -> None:
    """Score, in one batch, the gains :func:`route` will need for these chats (each as it will be served with the
    adapter), so routing many questions at once (a served evaluation) costs two packed passes instead of two
    forwards per question. Failures are left for :func:`route` to meet and handle."""
    try:
        gate = gate_for(model, adapter_id, adapter_path, system)
        if gate is _NO_GATE:
            return
        needed = [chat for messages in chats for chat in _asked(messages, gate)[1]]
        if needed:
            question_gains(model, needed, adapter_id, adapter_path)
    except Exception:  # noqa: BLE001 - route() answers each question on its own, as without the prefetch
        _logger.debug("routing prefetch failed for adapter %s", adapter_id, exc_info=True)


def calibrate(
    model: Model, adapter_id: str, adapter_path: str, system: str, documents: Iterable[str] | None = None
) -> Gate:
    """The adapter's gate from the generic prompts (asked under ``system``, the KB's adapter system prompt) and,
    when given, the documents it was trained on; written to the adapter's folder when it can be (kept in memory
    otherwise)."""
    from kadapt.replay import replay_prompts

    chats = [[{"role": "system", "content": system}, {"role": "user", "content": p}] for p in replay_prompts()]
    gains = question_gains(model, chats, adapter_id, adapter_path)
    documents = list(documents or ())
    gate = Gate(round(max(gains) + MARGIN, 3), kb_names(documents), kb_terms(model, documents))
    try:
        write_atomic(Path(adapter_path) / ROUTING_FILE, gate.to_json())
    except OSError:
        _logger.warning("could not write %s under %s; the gate is kept in memory", ROUTING_FILE, adapter_path)
    return gate


def _read_gate(file: Path) -> Gate | None:
    """The gate in ``file``, or None when it is missing or not a gate (a finite threshold, a list of names)."""
    try:
        data = json.loads(file.read_text())
        threshold, names = float(data["threshold"]), data.get("names", [])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    terms = data.get("terms", [])
    if not math.isfinite(threshold) or not isinstance(names, list) or not isinstance(terms, list):
        return None

    def kept(items: list) -> frozenset[str]:
        return frozenset(
            item for item in items[:_MAX_NAMES] if isinstance(item, str) and 0 < len(item) <= _MAX_NAME_CHARS
        )

    return Gate(threshold, kept(names), kept(terms))


_gates: OrderedDict[tuple[str, int | None], Gate] = OrderedDict()
_CACHED_GATES = 64
_lock = threading.Lock()
_NO_GATE = Gate(threshold=-math.inf)  # calibration failed: every question goes to the adapter


def gate_for(model: Model, adapter_id: str, adapter_path: str, system: str) -> Gate:
    """The adapter's gate: from its folder (read again when the file changes), else calibrated now."""
    file = Path(adapter_path) / ROUTING_FILE
    try:
        key = (adapter_path, file.stat().st_mtime_ns)
    except OSError:
        key = (adapter_path, None)
    with _lock:
        gate = _gates.get(key)
        if gate is None:
            gate = _read_gate(file) if key[1] is not None else None
            if gate is None:
                try:
                    gate = calibrate(model, adapter_id, adapter_path, system)
                except ScoringNotSupported:
                    raise
                except Exception:  # noqa: BLE001 - not tried again for this file: the adapter answers everything
                    _logger.warning("could not calibrate routing for adapter %s", adapter_id, exc_info=True)
                    gate = _NO_GATE
            _gates[key] = gate
            while len(_gates) > _CACHED_GATES:
                _gates.popitem(last=False)
        return gate


def route(model: Model, messages: Sequence[ChatMessage], adapter_id: str, adapter_path: str, system: str) -> Route:
    """Whether the chat ``messages`` (the prompt as served with the adapter, ending with the user's question) goes
    to the adapter: when any of its last user turns names something of the KB, uses one of its rare words, or the
    adapter recognises it (so
    that "When was she born?" after "Who is Orla Vantreight?" stays with the adapter). Every question goes to the
    adapter where the backend cannot score or the gate fails."""
    try:
        gate = gate_for(model, adapter_id, adapter_path, system)
        if gate is _NO_GATE:
            return Route(True, None, "routing failed: the adapter answers")
        decided, chats = _asked(messages, gate)
        if decided is not None:
            return decided
        gains = question_gains(model, chats, adapter_id, adapter_path)
    except ScoringNotSupported:
        return Route(True, None, "the model backend cannot score: no routing")
    except Exception:  # noqa: BLE001 - a failing gate must not fail the chat: the adapter answers, as without routing
        _logger.warning("routing failed for adapter %s; the adapter answers", adapter_id, exc_info=True)
        return Route(True, None, "routing failed: the adapter answers")
    gain = max(gains) if gains else 0.0
    if gain >= gate.threshold:
        return Route(True, round(gain, 2), f"the adapter recognises it ({gain:.1f} >= {gate.threshold:.1f} nats)")
    return Route(False, round(gain, 2), f"not about the KB ({gain:.1f} < {gate.threshold:.1f} nats)")
