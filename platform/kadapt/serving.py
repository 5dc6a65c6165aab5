"""Answering a chat for a KB: build the prompt for the KB's active mode and report the sources used.

In ``icl`` mode the whole KB goes into the prompt when it fits ``KADAPT_ICL_CONTEXT_TOKENS``; otherwise the
top chunks retrieved for the question do. Documents are fenced and declared to be data, not instructions.

:func:`chat_model` picks the model that answers: the KB's base model in this process, or — with
``KADAPT_LORA_SERVER_URL`` set and the KB served from an adapter — the multi-LoRA server (vLLM ``--enable-lora``),
which serves the KB's adapter under the KB's name. ICL KBs stay in-process: their prompts are budgeted with the
base model's own tokenizer.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import select

from kadapt.catalog import Catalog, Document, KnowledgeBase, Snapshot
from kadapt.citations import Citation, Passage, cite
from kadapt.delta import Delta, adapter_delta, snapshot_delta
from kadapt.errors import ConfigError, InvalidInput
from kadapt.models.base import ChatMessage, GenerationParams, Model
from kadapt.prompts import SYSTEM_PROMPT, adapter_system_prompt
from kadapt.readers import Audience, may_read, stored_readers
from kadapt.settings import Settings
from kadapt.store import VectorStore

if TYPE_CHECKING:
    from kadapt.catalog import Adapter

__all__ = [
    "ACTIVE",
    "DEFAULT_MAX_TOKENS",
    "LORA_SERVER_BACKEND",
    "NO_CONTEXT",
    "Citation",
    "GenerationFailed",
    "IclContext",
    "PreparedChat",
    "ROUTED_TO_BASE",
    "Source",
    "WithDocuments",
    "adapter_prompt",
    "answer",
    "chat_model",
    "chat_params",
    "icl_budget",
    "icl_context",
    "prepare_chat",
    "serving_adapter",
    "stream_answer",
]

# the marks that frame each document in a prompt (source_block): an answer that writes one is copying the prompt
SCAFFOLDING_STOPS = ("<<<", ">>>")

# "what the KB serves now": the default where an adapter (or None, no adapter) may be given instead
ACTIVE: Literal["active"] = "active"
# the floor of an evaluation: the base model asked with the fine-tuned modes' prompt, no adapter, no documents
NO_CONTEXT: Literal["no-context"] = "no-context"
# a question to a KB served from an adapter that is not about the KB (kadapt.routing): the base model answers it
ROUTED_TO_BASE: Literal["base-routed"] = "base-routed"
DEFAULT_MAX_TOKENS = 256  # an answer's length when the request sets no max_tokens


@dataclass(frozen=True)
class WithDocuments:
    """An adapter that answers with the documents in the prompt (mode aug-ft+rag): the prompt is icl's (whole
    KB or retrieved chunks, fenced), the answer comes from the adapter."""

    adapter: Any  # an Adapter row, or any object with id, path and mode (a pilot's adapter folder)
    mode: str = "aug-ft+rag"

    @property
    def id(self) -> str:
        return self.adapter.id

    @property
    def path(self) -> str:
        return self.adapter.path


def serving_adapter(catalog: Catalog, kb: KnowledgeBase) -> Adapter | WithDocuments | None:
    """What the KB serves now: its active adapter (ft, aug-ft), that adapter with documents (aug-ft+rag) or None."""
    from kadapt.adapters import active_adapter
    from kadapt.modes import RAG_MODE

    adapter = active_adapter(catalog, kb)
    return WithDocuments(adapter) if adapter is not None and kb.active_mode == RAG_MODE else adapter


@dataclass
class Source:
    index: int
    document_id: str
    locator: str
    title: str
    score: float | None = None


@dataclass
class PreparedChat:
    messages: list[ChatMessage]
    sources: list[Source]
    mode: str  # "icl-whole-kb" | "icl-retrieval" | "adapter:<mode>" | "no-context" | "base-routed"
    prompt_tokens: int
    adapter_id: str | None = None
    adapter_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # icl: each source's text as put in the prompt (chunks of one document joined), and the question, so that
    # the answer's citations can quote the documents once it is written
    passages: list[Passage] = field(default_factory=list, repr=False)
    question: str = ""
    # icl with context-aware decoding (KADAPT_ICL_CONTRAST): the same prompt without the documents, and its weight
    contrast_messages: list[ChatMessage] = field(default_factory=list, repr=False)
    contrast_weight: float = 0.0

    def params(self, params: GenerationParams) -> GenerationParams:
        """``params`` with this chat's adapter (if any) and context-aware decoding (if set) applied; a prompt that
        holds documents also stops the answer where it would start copying their frame (SCAFFOLDING_STOPS), so
        no surface ever shows the prompt's scaffolding."""
        stop = tuple(dict.fromkeys((*params.stop, *SCAFFOLDING_STOPS))) if self.sources else params.stop
        return replace(
            params,
            stop=stop,
            adapter_id=self.adapter_id,
            adapter_path=self.adapter_path,
            contrast_messages=tuple(self.contrast_messages),
            contrast_weight=self.contrast_weight,
        )

    def sources_json(self) -> list[dict[str, Any]]:
        return [asdict(source) for source in self.sources]

    def citations(self, answer_text: str) -> list[Citation]:
        """The documents in the prompt that ``answer_text`` drew on, each with the sentence of it that best supports
        the answer, quoted verbatim (:func:`kadapt.citations.cite`); none when no document was in the prompt."""
        return cite(self.passages, answer_text, self.question)

    def citations_json(self, answer_text: str) -> list[dict[str, Any]]:
        return [asdict(citation) for citation in self.citations(answer_text)]


LORA_SERVER_BACKEND = "lora-server"  # model backend of the LoRA server (kadapt_openai); models are KB names


def chat_model(pool, kb: KnowledgeBase, adapter: Adapter | None | Literal["active"] = ACTIVE) -> Model:
    """The model that answers chats on ``kb``: the LoRA server's model named after the KB when
    ``KADAPT_LORA_SERVER_URL`` is set and the KB is served from an adapter (ft, aug-ft); else the KB's base model.

    ``adapter`` is the one the answers will use (:func:`prepare_chat`'s): the KB's active one by default. The LoRA
    server serves only that one under the KB's name, so any other (or None) is answered in this process."""
    from kadapt.modes import ADAPTER_MODES

    served_by_kb = adapter == ACTIVE or (adapter not in (None, NO_CONTEXT) and adapter.id == kb.active_adapter)
    if pool.settings.lora_server_url and kb.active_mode in ADAPTER_MODES and kb.active_adapter and served_by_kb:
        if LORA_SERVER_BACKEND not in pool.plugins.contributions("register_models"):
            raise ConfigError(
                f"KADAPT_LORA_SERVER_URL is set but the {LORA_SERVER_BACKEND!r} model backend is not installed; "
                "install it with: pip install 'kadapt[openai]'"
            )
        return pool.get(f"{LORA_SERVER_BACKEND}:{kb.slug}")
    return pool.get(kb.base_model)


def _question(messages: list[ChatMessage]) -> str:
    for message in reversed(messages):
        if message["role"] == "user":
            return message["content"]
    raise InvalidInput("messages: need at least one message with role 'user'")


# no tokenizer packs more than ~6 characters a token on prose: a KB of more characters than this many times
# the budget cannot fit, and is never read
_MAX_CHARS_PER_TOKEN = 6


def _kb_size(catalog: Catalog, kb: KnowledgeBase) -> tuple[int, int]:
    """(documents, characters) of the KB: its latest snapshot's totals, so that no text is read; summed by the
    database when the snapshot has none (recorded before they were kept) or there is none yet."""
    from kadapt.kb_limits import document_chars

    with catalog.session() as session:
        latest = session.execute(
            select(Snapshot.document_count, Snapshot.text_chars)
            .where(Snapshot.kb_id == kb.id)
            .order_by(Snapshot.id.desc())
            .limit(1)
        ).first()
        if latest is not None and latest.text_chars is not None:
            return latest.document_count, latest.text_chars
        return document_chars(session, kb.id)


def _whole_kb(catalog: Catalog, kb: KnowledgeBase, max_chars: int, audience: Audience = None) -> list | None:
    """The KB's documents that ``audience`` may read, or None as soon as their texts pass ``max_chars`` (the
    documents may have changed since the snapshot: a sync is running), so that reading them costs at most that."""
    documents, characters = [], 0
    with catalog.session() as session:
        rows = session.execute(
            select(Document.id, Document.locator, Document.title, Document.text, Document.meta)
            .where(Document.kb_id == kb.id)
            .order_by(Document.locator)
            .execution_options(yield_per=64)
        )
        for row in rows:
            if not may_read(stored_readers(row.meta), audience):
                continue
            characters += len(row.text)
            if characters > max_chars:
                return None
            documents.append(row)
    return documents


def _fits(model: Model, documents, budget: int) -> bool:
    """Whether the whole KB fits ``budget`` tokens: by the character bound first (so a large KB is never
    tokenized), then by the tokenizer."""
    if sum(len(row.text) for row in documents) > budget * _MAX_CHARS_PER_TOKEN:
        return False
    joined = "\n\n".join(row.text for row in documents)
    return model.count_tokens([{"role": "user", "content": joined}]) + 12 * len(documents) <= budget


def _fence(index: int, title: str, locator: str, text: str) -> str:
    # a document must not close its own fence and go on as if it were the prompt: its markers are broken up
    def inert(value: str) -> str:
        return re.sub(r"<{3,}|>{3,}", lambda run: " ".join(run.group()), value)

    heading = " ".join(f"{title} ({locator})".split())
    return f"[{index}] {inert(heading)}\n{SCAFFOLDING_STOPS[0]}\n{inert(text.strip())}\n{SCAFFOLDING_STOPS[1]}"


@dataclass
class IclContext:
    """The documents an icl prompt holds for one question: the whole KB when it fits the budget, else the top
    retrieved chunks that fit it (:func:`icl_context`)."""

    how: str  # "icl-whole-kb" | "icl-retrieval"
    sources: list[Source]  # most relevant first
    blocks: list[str]  # fenced, in the order of ``sources``; a prompt puts them most relevant last
    texts: dict[int, str]  # source index -> its text in the prompt


def icl_budget(model: Model, settings: Settings, asked: int, reserve: int) -> int:
    """Tokens the documents of an icl prompt may take: ``KADAPT_ICL_CONTEXT_TOKENS``, within what the model's
    context window leaves after the ``asked`` tokens and ``reserve`` for the answer; InvalidInput when nothing."""
    budget = min(settings.icl_context_tokens, model.context_window - asked - reserve - 64)
    if budget <= 0:
        raise InvalidInput(
            f"the messages ({asked} tokens) plus max_tokens ({reserve}) do not fit the model's context "
            f"window of {model.context_window} tokens"
        )
    return budget


def icl_context(model: Model, documents, hits, budget: int, retrieval_k: int, *, whole: bool | None = None):
    """The documents of an icl prompt — what serving and the pilot's multiple-choice scoring both put in front of a
    question. ``documents`` (rows with id, locator, title, text; None when the KB cannot fit) go in whole when they
    fit ``budget`` (``whole`` decides when given), ranked by their best score among ``hits``; else the first
    ``retrieval_k`` of ``hits`` that fit the budget, chunks of one document under one source."""
    best_score: dict[str, float] = {}
    for hit in hits:
        best_score.setdefault(hit.document_id, hit.score)
    if whole is None:
        whole = bool(documents) and _fits(model, documents, budget)
    context = IclContext("icl-whole-kb" if whole else "icl-retrieval", [], [], {})
    if whole:
        ranked = sorted(documents, key=lambda row: -best_score.get(row.id, -1.0))
        for index, row in enumerate(ranked, 1):
            context.sources.append(Source(index, row.id, row.locator, row.title, best_score.get(row.id)))
            context.blocks.append(_fence(index, row.title, row.locator, row.text))
            context.texts[index] = row.text
        return context
    used = 0
    by_document: dict[str, Source] = {}
    for hit in hits[:retrieval_k]:
        cost = model.count_tokens([{"role": "user", "content": hit.text}])
        if used + cost > budget and context.blocks:
            break
        used += cost
        source = by_document.get(hit.document_id)
        if source is None:
            source = Source(len(by_document) + 1, hit.document_id, hit.locator, hit.title, hit.score)
            by_document[hit.document_id] = source
            context.sources.append(source)
        context.blocks.append(_fence(source.index, hit.title, hit.locator, hit.text))
        known = context.texts.get(source.index)
        context.texts[source.index] = f"{known}\n\n{hit.text}" if known else hit.text
    return context


def _asked_tokens(model: Model, conversation: list[ChatMessage], settings: Settings) -> int:
    asked = model.count_tokens(conversation)
    if asked > settings.max_prompt_tokens:
        raise InvalidInput(
            f"the messages are {asked} tokens, over the limit of {settings.max_prompt_tokens} "
            "(KADAPT_MAX_PROMPT_TOKENS); shorten the conversation"
        )
    return asked


@dataclass
class _Delta:
    """What changed since an adapter's snapshot, and whether this question is about it."""

    delta: Delta
    about: str | None  # "changed": its best-matching document changed; "removed": it names a removed one; None


def _adapter_delta(catalog, store, kb, adapter, question: str, settings) -> _Delta | None:
    """What changed since ``adapter``'s snapshot, and whether ``question`` is about it: its best-matching document
    (retrieval over the KB) was added or changed since, or it names a document removed since (its title or file
    name). None when nothing changed (or ``KADAPT_DELTA_ICL`` is off, or the adapter has no snapshot: a pilot's)."""
    if adapter == NO_CONTEXT or not settings.delta_icl or getattr(adapter, "snapshot_id", None) is None:
        return None
    delta = (
        adapter_delta(catalog, adapter)
        if hasattr(adapter, "kb_id")
        else snapshot_delta(catalog, kb.id, adapter.snapshot_id)
    )
    if delta.empty:
        return None
    if _names_removed(question, delta):
        return _Delta(delta, "removed")
    if delta.documents:
        hits = store.search(kb, question, k=1)
        if hits and hits[0].document_id in set(delta.document_ids):
            return _Delta(delta, "changed")
    return _Delta(delta, None)


_WORD = re.compile(r"[^\W\d_]{4,}")


def _names_removed(question: str, delta: Delta) -> bool:
    """Whether ``question`` names a removed document: a word of its title or file name (4 letters or more, not a
    common word) that no current document's name shares and the question uses."""
    from kadapt.text import STOPWORDS

    def words(value: str | None) -> set[str]:
        return {word.lower() for word in _WORD.findall(value or "")} - STOPWORDS

    current = set().union(*(words(item.title) | words(item.locator) for item in delta.documents))
    asked = words(question)
    return any(asked & (words(item.title) | words(item.locator)) - current for item in delta.removed)


def _delta_extra(changed: _Delta | None, settings: Settings, adapter=None) -> dict[str, Any]:
    """What a chat answer says of the delta: its counts, what the question was about, and the first of the changed
    and removed documents (the counts say how many there are)."""
    if changed is None:
        return {}
    data = changed.delta.summary(settings) | {
        "about": changed.about,
        "documents": changed.delta.documents_json()[:_MAX_DELTA_DOCUMENTS],
    }
    if adapter is not None:  # set aside: the question was about what changed since it was trained
        data["adapter"] = adapter.id
    return {"delta": data}


_MAX_DELTA_DOCUMENTS = 40  # changed and removed documents a chat answer lists (the counts say how many there are)


def adapter_prompt(kb: KnowledgeBase, conversation: list[ChatMessage], client_system: str = "") -> list[ChatMessage]:
    """The prompt of a chat served from the KB's adapter: its system prompt (and the client's), then the chat."""
    system = adapter_system_prompt(kb)
    if client_system:
        system += "\n\n" + client_system
    return [{"role": "system", "content": system}, *conversation]


def _adapter_chat(model, kb, adapter, conversation, client_system, settings, changed=None) -> PreparedChat:
    """A fine-tuned mode's chat: the knowledge is in the adapter, no documents in the prompt; a question not about
    the KB goes to the base model (:mod:`kadapt.routing`)."""
    prompt = adapter_prompt(kb, conversation, client_system)
    if adapter == NO_CONTEXT:  # the same prompt without the adapter: what the base model knows alone
        return PreparedChat(messages=prompt, sources=[], mode=NO_CONTEXT, prompt_tokens=model.count_tokens(prompt))
    extra = _delta_extra(changed, settings)
    if settings.adapter_routing:
        from kadapt.routing import route

        routed = route(model, prompt, adapter.id, adapter.path, adapter_system_prompt(kb))
        if not routed.to_adapter:  # a general question: the base model answers it, as it would without the KB
            return PreparedChat(
                messages=prompt,
                sources=[],
                mode=ROUTED_TO_BASE,
                prompt_tokens=model.count_tokens(prompt),
                extra=extra | {"route": routed.to_dict()},
            )
    return PreparedChat(
        messages=prompt,
        sources=[],
        mode=f"adapter:{adapter.mode}",
        prompt_tokens=model.count_tokens(prompt),
        adapter_id=adapter.id,
        adapter_path=adapter.path,
        extra=extra,
    )


def _serving_context(
    catalog, store, kb, model, question: str, budget: int, settings: Settings, audience: Audience = None
) -> IclContext:
    """The KB's icl context for ``question`` from what ``audience`` may read: its texts are read only when their
    total says they may fit."""
    document_count, characters = _kb_size(catalog, kb)
    documents = None
    if document_count and characters <= budget * _MAX_CHARS_PER_TOKEN:
        documents = _whole_kb(catalog, kb, budget * _MAX_CHARS_PER_TOKEN, audience)
    hits = store.search(kb, question, k=max(settings.retrieval_k, 8), audience=audience) if document_count else []
    return icl_context(model, documents, hits, budget, settings.retrieval_k)


def _for_audience(store: VectorStore, kb: KnowledgeBase, adapter, audience: Audience) -> tuple[Any, dict[str, Any]]:
    """The adapter that may answer ``audience`` and what the answer says of it: only what they may read is
    retrieved or cited (kadapt.readers), and an adapter, which has seen every document, answers only a caller who
    may read them all: anyone else gets icl, and ``restricted`` says why."""
    if adapter is not None and adapter != NO_CONTEXT and _hides(store, kb, adapter, audience):
        return None, {"restricted": "the adapter has seen documents this caller may not read: answered from theirs"}
    return adapter, {}


def _hides(store: VectorStore, kb: KnowledgeBase, adapter, audience: Audience) -> bool:
    """Whether an adapter would answer ``audience`` from a document they may not read: one the KB holds now, or one
    it learned from (kept with it when trained: the document may be gone since)."""
    if audience is None:
        return False
    model = adapter.adapter if isinstance(adapter, WithDocuments) else adapter
    seen = (getattr(model, "config", None) or {}).get("readers") or []
    return any(not may_read(readers, audience) for readers in seen) or store.hides_from(kb, audience)


def _with_documents(system: str, blocks: list[str]) -> str:
    if not blocks:
        return system + "\n\nDocuments: none (the knowledge base is empty)."
    # the most relevant document goes last, next to the question (sources still list it first): the small model
    # answers from what it read last (samples/biographies, served accuracy)
    return system + "\n\nDocuments:\n\n" + "\n\n".join(reversed(blocks))


def prepare_chat(
    catalog: Catalog,
    store: VectorStore,
    kb: KnowledgeBase,
    model: Model,
    messages: list[ChatMessage],
    settings: Settings,
    *,
    max_tokens: int,
    adapter: Adapter | WithDocuments | None | Literal["active", "no-context"] = ACTIVE,
    icl_contrast: float | None = None,
    audience: Audience = None,
) -> PreparedChat:
    """The prompt messages and sources for ``messages`` on ``kb``; raises InvalidInput when too long.

    ``adapter``: the KB's active one by default (what the KB serves); an evaluation of another mode passes its
    adapter, or None for icl (documents in the prompt), or :data:`NO_CONTEXT` for the floor (the base model with
    the fine-tuned modes' prompt, no documents), or a :class:`WithDocuments` (aug-ft+rag: icl's prompt answered
    by the adapter), without changing what the KB serves. ``icl_contrast``: the context-aware decoding weight of an
    icl answer (default: the KB's, which its pilot chose; 0: plain decoding). ``audience``: the caller's groups
    (None: all), as :func:`_for_audience` serves them."""
    conversation = [dict(message) for message in messages if message["role"] != "system"]
    client_system = "\n".join(message["content"] for message in messages if message["role"] == "system")
    question = _question(messages)
    budget = icl_budget(model, settings, _asked_tokens(model, conversation, settings), max_tokens)
    if adapter == ACTIVE:
        adapter = serving_adapter(catalog, kb)
    adapter, extra = _for_audience(store, kb, adapter, audience)
    if adapter is not None and not isinstance(adapter, WithDocuments):
        changed = _adapter_delta(catalog, store, kb, adapter, question, settings)
        if changed is None or changed.about is None:
            return _adapter_chat(model, kb, adapter, conversation, client_system, settings, changed)
        # about what changed since the adapter was trained: answered from the current documents, as icl answers
        extra, adapter = _delta_extra(changed, settings, adapter), None
    context = _serving_context(catalog, store, kb, model, question, budget, settings, audience)
    sources, blocks, texts, mode = context.sources, context.blocks, context.texts, context.how
    system = SYSTEM_PROMPT.format(title=kb.title or kb.slug)
    if client_system:
        system += "\n\n" + client_system
    # context-aware decoding contrasts the answer with the one the same prompt without documents would get; only
    # for icl: with an adapter (aug-ft+rag) it would subtract the adapter's own knowledge
    weight = kb.icl_contrast if icl_contrast is None else icl_contrast
    contrast = []
    if blocks and adapter is None and weight and weight > 0:
        contrast = [{"role": "system", "content": system}, *conversation]
    prompt = [{"role": "system", "content": _with_documents(system, blocks)}, *conversation]
    passages = [Passage(s.index, s.document_id, s.locator, s.title, texts[s.index]) for s in sources]
    return PreparedChat(
        messages=prompt,
        sources=sources,
        mode=f"adapter:{adapter.mode}" if adapter is not None else f"delta:{mode}" if "delta" in extra else mode,
        extra=extra,
        prompt_tokens=model.count_tokens(prompt),
        adapter_id=adapter.id if adapter is not None else None,
        adapter_path=adapter.path if adapter is not None else None,
        passages=passages,
        question=question,
        contrast_messages=contrast,
        contrast_weight=weight if contrast else 0.0,
    )


def chat_params(
    settings: Settings,
    *,
    max_tokens: int | None = None,
    temperature: float = GenerationParams.temperature,
    top_p: float = GenerationParams.top_p,
    stop: str | list[str] | tuple[str, ...] | None = None,
    seed: int | None = None,
) -> GenerationParams:
    """The decoding settings of a chat request: ``max_tokens`` defaults to :data:`DEFAULT_MAX_TOKENS` and may not
    pass ``KADAPT_MAX_COMPLETION_TOKENS``; greedy unless a temperature is given. A request that sets neither
    ``stop`` nor ``max_tokens`` stops at ``KADAPT_ANSWER_STOP`` (the end of the first line): a short answer."""
    if stop is None and max_tokens is None:
        stop = tuple(settings.answer_stop)
    requested = max_tokens or DEFAULT_MAX_TOKENS
    if requested > settings.max_completion_tokens:
        raise InvalidInput(
            f"max_tokens={requested} is over the limit of {settings.max_completion_tokens} "
            "(KADAPT_MAX_COMPLETION_TOKENS)"
        )
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    return GenerationParams(max_tokens=requested, temperature=temperature, top_p=top_p, stop=stops, seed=seed)


async def answer(model: Model, prepared: PreparedChat, params: GenerationParams):
    """The whole answer to a prepared chat, as a ``Completion``: what a non-streamed chat request returns.
    Concurrent calls share the backend's batches."""
    return await model.generate(prepared.messages, prepared.params(params))


@dataclass
class GenerationFailed:
    """What :func:`stream_answer` yields, last, when the model could not finish the answer."""

    message: str


async def stream_answer(model: Model, prepared: PreparedChat, params: GenerationParams):
    """The answer's text pieces as the model writes them, then its final ``Completion`` (None when the model
    gave none) — or a :class:`GenerationFailed` in its place; every chat surface streams through this."""
    from kadapt.errors import KadaptError
    from kadapt.models.base import Completion

    final = None
    try:
        async for piece in model.stream(prepared.messages, prepared.params(params)):
            if isinstance(piece, Completion):
                final = piece
            elif piece:
                yield piece
    except (KadaptError, ValueError) as exc:
        yield GenerationFailed(exc.message if isinstance(exc, KadaptError) else str(exc))
        return
    yield final
