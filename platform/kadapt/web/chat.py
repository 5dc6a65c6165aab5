"""The employee chat page, and the stream its script reads the answer from.

``POST /ui/chat/stream`` answers exactly as ``POST /v1/chat/completions`` does (the KB's active mode, the same
prompt, sources and decoding settings) and streams newline-delimited JSON: one ``sources`` line, ``text`` lines
as the model writes, then ``done`` with the answer's ``citations`` (each cited document with the sentence of it
that supports the answer, quoted verbatim), or ``error``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from kadapt.access import kb_for_reader
from kadapt.chat_queue import principal_key
from kadapt.kbs import list_kbs
from kadapt.serving import GenerationFailed, chat_model, chat_params, prepare_chat, stream_answer
from kadapt.web.render import PREFIX, PageRoute, render
from kadapt.web.session import CSRF_HEADER, UserDep, check_csrf

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


@router.get("/chat")
def chat(request: Request, user: UserDep, kb: str | None = None) -> Response:
    """Ask a KB a question; the picker lists only the KBs the user may read."""
    kbs = [row for row in list_kbs(request.app.state.catalog) if user.principal.can_read(row)]
    selected = kb if any(row.slug == kb for row in kbs) else (kbs[0].slug if kbs else None)
    return render(request, "chat.html.j2", user, kbs=kbs, selected=selected)


def _line(payload: dict[str, Any]) -> bytes:
    return (json.dumps(payload) + "\n").encode()


@router.post("/chat/stream")
async def stream(request: Request, body: WebChatRequest, user: UserDep) -> Response:
    """The answer to the conversation's last question, streamed as newline-delimited JSON."""
    check_csrf(user.session, request.headers.get(CSRF_HEADER))
    state = request.app.state
    catalog, settings = state.catalog, state.settings
    kb = await run_in_threadpool(kb_for_reader, catalog, user.principal, body.kb)
    ticket = state.chat_queue.admit(principal_key(user.principal))  # 429 past KADAPT_MAX_CHAT_QUEUE
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
    sources = [
        source | {"href": f"{PREFIX}/kbs/{quote(kb.slug)}/documents/{quote(source['document_id'])}"}
        for source in prepared.sources_json()
    ]

    async def lines() -> AsyncIterator[bytes]:
        try:
            async for line in answer_lines():
                yield line
        finally:  # answered, failed or the reader went away
            ticket.release()

    async def answer_lines() -> AsyncIterator[bytes]:
        yield _line({"type": "sources", "mode": prepared.mode, "sources": sources})
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
        citations = await run_in_threadpool(prepared.citations_json, "".join(pieces))
        yield _line({"type": "done", "finish_reason": final.finish_reason if final else "stop", "citations": citations})

    return StreamingResponse(lines(), media_type="application/x-ndjson")
