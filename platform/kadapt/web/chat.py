"""The employee chat page, and the stream its script reads the answer from.

``POST /ui/chat/stream`` answers exactly as ``POST /v1/chat/completions`` does (the KB's active mode, the same
prompt, sources and decoding settings) and streams newline-delimited JSON: one ``sources`` line (with what
answers: mode, adapter, model), ``text`` lines as the model writes, then ``done`` with the answer's
``citations`` (each cited document with the sentence of it that supports the answer, quoted verbatim), the
answer as sanitised HTML (Markdown rendered, links as text) and the conversation it was kept in, or ``error``.

The user's conversations (:mod:`kadapt.conversations`) are listed, read and deleted under
``/ui/chat/conversations``; only their owner sees them, and only while they may read the KB.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from kadapt.access import kb_for_reader
from kadapt.catalog.models import utcnow
from kadapt.chat_queue import principal_key
from kadapt.conversations import (
    delete_conversation,
    get_conversation,
    list_conversations,
    most_read_kb,
    record_turn,
)
from kadapt.kbs import list_kbs
from kadapt.serving import GenerationFailed, chat_model, chat_params, prepare_chat, stream_answer
from kadapt.web.render import PREFIX, PageRoute, markdown_html, render, when
from kadapt.web.session import CSRF_HEADER, FormDep, UserDep, check_csrf

router = APIRouter(route_class=PageRoute)


class ChatTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(max_length=20_000)


class WebChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kb: str
    messages: list[ChatTurn] = Field(min_length=1, max_length=40)
    max_tokens: int | None = Field(
        default=None, ge=1, description="Longest answer, in tokens (default: a chat request's that sets none)."
    )
    conversation: str | None = Field(default=None, max_length=32, description="The conversation to keep it in.")
    regenerate: bool = Field(default=False, description="This answer replaces the conversation's last one.")


@router.get("/chat")
def chat(request: Request, user: UserDep, kb: str | None = None) -> Response:
    """Ask a KB a question; the picker lists only the KBs the user may read, the one they ask most first."""
    catalog = request.app.state.catalog
    kbs = [row for row in list_kbs(catalog) if user.principal.can_read(row)]
    if any(row.slug == kb for row in kbs):
        selected = kb
    else:
        most = most_read_kb(catalog, principal_key(user.principal), {row.id for row in kbs})
        selected = next((row.slug for row in kbs if row.id == most), kbs[0].slug if kbs else None)
    return render(request, "chat.html.j2", user, kbs=kbs, selected=selected)


ANSWERED_BY = {
    "icl-whole-kb": "icl: the whole KB in the prompt",
    "icl-retrieval": "icl: retrieved passages in the prompt",
    "no-context": "the base model, without documents",
    "base-routed": "the base model (a general question, not about this KB)",
}


def answered_by(prepared, kb) -> dict[str, Any]:
    """What answered, for the mark on the answer: the mode as served, its adapter and the model."""
    mode = prepared.mode
    if mode.startswith("adapter:"):
        label = f"{mode.removeprefix('adapter:')}: the KB's adapter"
    elif mode.startswith("delta:"):
        label = "icl: documents changed since the adapter was trained"
    else:
        label = ANSWERED_BY.get(mode, mode)
    return {"mode": mode, "label": label, "adapter": prepared.adapter_id, "model": kb.base_model}


SNIPPET_CHARS = 240


def _sources(prepared, kb) -> list[dict[str, Any]]:
    """The documents in the prompt, each with its console link and the start of the text the model read (its
    citation, once the answer is written, quotes the supporting sentence instead)."""
    texts = {passage.index: passage.text for passage in prepared.passages}
    rows = []
    for source in prepared.sources_json():
        text = " ".join(texts.get(source["index"], "").split())
        snippet = text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1].rsplit(" ", 1)[0] + " …"
        href = f"{PREFIX}/kbs/{quote(kb.slug)}/documents/{quote(source['document_id'])}"
        rows.append(source | {"href": href, "snippet": snippet})
    return rows


def _line(payload: dict[str, Any]) -> bytes:
    return (json.dumps(payload) + "\n").encode()


@router.post("/chat/stream")
async def stream(request: Request, body: WebChatRequest, user: UserDep) -> Response:
    """The answer to the conversation's last question, streamed as newline-delimited JSON."""
    check_csrf(user.session, request.headers.get(CSRF_HEADER))
    state = request.app.state
    catalog, settings = state.catalog, state.settings
    kb = await run_in_threadpool(kb_for_reader, catalog, user.principal, body.kb)
    owner = principal_key(user.principal)
    ticket = state.chat_queue.admit(owner)  # 429 past KADAPT_MAX_CHAT_QUEUE
    try:
        store = await run_in_threadpool(state.store)
        model = await run_in_threadpool(chat_model, state.pool, kb)
        params = chat_params(settings, max_tokens=body.max_tokens)  # as /v1/chat/completions decodes
        messages = [turn.model_dump() for turn in body.messages]
        prepared = await run_in_threadpool(
            prepare_chat,
            catalog,
            store,
            kb,
            model,
            messages,
            settings,
            max_tokens=params.max_tokens,
            audience=user.principal.audience,
        )
    except BaseException:
        ticket.release()
        raise
    sources = _sources(prepared, kb)

    async def lines() -> AsyncIterator[bytes]:
        try:
            async for line in answer_lines():
                yield line
        finally:  # answered, failed or the reader went away
            ticket.release()

    by = answered_by(prepared, kb)

    async def answer_lines() -> AsyncIterator[bytes]:
        yield _line({"type": "sources", "mode": prepared.mode, "answered_by": by, "sources": sources})
        final = None
        pieces: list[str] = []
        async for piece in stream_answer(model, prepared, params):
            if isinstance(piece, str):
                pieces.append(piece)
                yield _line({"type": "text", "text": piece})
            elif isinstance(piece, GenerationFailed):
                yield _line({"type": "error", "message": piece.message})
                return
            else:
                final = piece
        turn = {"question": messages[-1]["content"], "answer": "".join(pieces), "sources": sources, "answered_by": by}
        turn["finish_reason"] = final.finish_reason if final else "stop"
        yield _line(await run_in_threadpool(_done, catalog, owner, kb, body, prepared, turn))

    return StreamingResponse(lines(), media_type="application/x-ndjson")


def _done(catalog, owner: str, kb, body: WebChatRequest, prepared, turn: dict[str, Any]) -> dict[str, Any]:
    """The answer's last line: its citations, its sanitised HTML and the conversation it is now kept in."""
    turn |= {"citations": prepared.citations_json(turn["answer"]), "at": utcnow().isoformat()}
    conversation = record_turn(catalog, owner, kb, body.conversation, turn, replace_last=body.regenerate)
    return {"type": "done", "finish_reason": turn["finish_reason"], "citations": turn["citations"]} | {
        "conversation": conversation,
        "html": str(markdown_html(turn["answer"], links=False)),
    }


def _owned_conversation(request: Request, user, conversation_id: str):
    """The KB and turns of one of the user's conversations; NotFound when it is not theirs, or when they may no
    longer read its KB."""
    from kadapt.catalog import KnowledgeBase
    from kadapt.errors import NotFound

    catalog = request.app.state.catalog
    kb_id, turns = get_conversation(catalog, principal_key(user.principal), conversation_id)
    with catalog.session() as session:
        kb = session.get(KnowledgeBase, kb_id)
    if kb is None or not user.principal.can_read(kb):
        raise NotFound(f"no conversation {conversation_id!r}")
    return kb, turns


@router.get("/chat/conversations")
def conversations(request: Request, user: UserDep, kb: str) -> JSONResponse:
    """The user's conversations with a KB, newest first."""
    catalog = request.app.state.catalog
    row = kb_for_reader(catalog, user.principal, kb)
    rows = list_conversations(catalog, principal_key(user.principal), row)
    return JSONResponse([item | {"updated_at": when(item["updated_at"])} for item in rows])


@router.get("/chat/conversations/{conversation_id}")
def conversation(request: Request, conversation_id: str, user: UserDep) -> JSONResponse:
    """One of the user's conversations: its KB and turns (each answer also as sanitised HTML)."""
    kb, turns = _owned_conversation(request, user, conversation_id)
    readable = _readable(request.app.state.catalog, kb, turns, user.principal.audience)
    return JSONResponse({"id": conversation_id, "kb": kb.slug, "turns": [_shown(turn, readable) for turn in turns]})


WITHHELD = "This answer drew on documents you may no longer read, so it is not shown again."


def _shown(turn: dict[str, Any], readable: set[str]) -> dict[str, Any]:
    """A kept turn as its owner may see it now: an answer that drew on a document they may no longer read (or
    one deleted since) is withheld, its sources with it; the rest with its answer as sanitised HTML."""
    named = {row.get("document_id") for key in SOURCE_KEYS for row in turn.get(key) or []}
    if named - readable:
        return turn | {"answer": WITHHELD, "html": str(markdown_html(WITHHELD)), "sources": [], "citations": []}
    return turn | {"html": str(markdown_html(turn.get("answer", ""), links=False))}


SOURCE_KEYS = ("sources", "citations")


def _readable(catalog, kb, turns: list[dict[str, Any]], audience) -> set[str]:
    """Of the documents a conversation's turns name, those the user may read now: a source deleted since, or one
    whose readers no longer include the user's groups, leaves the reopened conversation (with its snippet)."""
    from sqlalchemy import select

    from kadapt.catalog import Document
    from kadapt.readers import may_read, stored_readers

    named = {row.get("document_id") for turn in turns for key in SOURCE_KEYS for row in turn.get(key) or []}
    named.discard(None)
    with catalog.session() as session:
        rows = session.execute(
            select(Document.id, Document.meta).where(Document.kb_id == kb.id, Document.id.in_(named))
        ).all()
    return {document_id for document_id, meta in rows if may_read(stored_readers(meta), audience)}


@router.post("/chat/conversations/{conversation_id}/delete")
def forget(request: Request, conversation_id: str, user: UserDep, form: FormDep) -> JSONResponse:
    """Delete one of the user's conversations (a form post: the CSRF token in its body); ownership is all it
    takes, so a user who lost the KB can still delete their history with it."""
    delete_conversation(request.app.state.catalog, principal_key(user.principal), conversation_id)
    return JSONResponse({"deleted": conversation_id})
