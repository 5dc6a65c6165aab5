"""OpenAI-compatible endpoints: ``GET /v1/models`` and ``POST /v1/chat/completions``."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from kadapt.access import kb_for_reader
from kadapt.api.deps import CatalogDep, PoolDep, PrincipalDep, SettingsDep, StoreDep
from kadapt.api.schemas import ChatRequest
from kadapt.chat_queue import ChatTicket, principal_key
from kadapt.errors import error_body
from kadapt.kbs import list_kbs
from kadapt.models import GenerationParams
from kadapt.serving import GenerationFailed, answer, chat_model, chat_params, prepare_chat, stream_answer

router = APIRouter(prefix="/v1", tags=["chat"])


@router.get("/models")
async def models(catalog: CatalogDep, principal: PrincipalDep) -> dict[str, Any]:
    """The KBs the caller may read, as OpenAI model objects."""
    kbs = await run_in_threadpool(list_kbs, catalog)
    return {
        "object": "list",
        "data": [
            {
                "id": kb.slug,
                "object": "model",
                "created": int(kb.created_at.timestamp()),
                "owned_by": "kadapt",
                "title": kb.title,
                "mode": kb.active_mode,
            }
            for kb in kbs
            if principal.can_read(kb)
        ],
    }


def _params(body: ChatRequest, settings) -> GenerationParams:
    return chat_params(
        settings,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stop,
        seed=body.seed,
    )


# a streamed answer is a text/event-stream of chat.completion.chunk objects, each a `data:` line, then [DONE]
_EVENT = {
    "type": "object",
    "properties": {"data": {"type": "string", "description": "A chat.completion.chunk as JSON, or [DONE]."}},
    "required": ["data"],
}
_STREAM_RESPONSE = {
    200: {
        "description": "A chat.completion object, or with `stream: true` server-sent events.",
        "content": {"application/json": {}, "text/event-stream": {"schema": _EVENT}},
    }
}


@router.post("/chat/completions", response_model=None, responses=_STREAM_RESPONSE)
async def chat_completions(
    request: Request,
    body: ChatRequest,
    catalog: CatalogDep,
    store: StoreDep,
    pool: PoolDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> JSONResponse | EventSourceResponse:
    """Answer from a KB (``model`` is its name); ``stream: true`` sends server-sent events ending with [DONE].

    Responses carry ``sources``: the documents (locator, title, score) put in the prompt, and ``citations``: those
    the answer drew on, each with ``quote``, the sentence of it that best supports the answer, verbatim. A streamed
    answer sends ``sources`` with its first chunk and ``citations`` with the chunk that carries ``finish_reason``.
    ``kadapt`` says how it was answered: the mode, the adapter, and for a KB whose documents changed since its
    adapter's snapshot, ``delta``: that snapshot, the current one, and the documents added, changed and removed.
    """
    kb = await run_in_threadpool(kb_for_reader, catalog, principal, body.model)
    audience = principal.audience
    params = _params(body, settings)
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
    ticket = request.app.state.chat_queue.admit(principal_key(principal))  # 429 past KADAPT_MAX_CHAT_QUEUE
    try:
        return await _answer(body, kb, catalog, store, pool, settings, messages, params, ticket, audience)
    except BaseException:
        ticket.release()
        raise


def _usage(completion) -> dict[str, int]:
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
    }


async def _answer(body, kb, catalog, store, pool, settings, messages, params, ticket: ChatTicket, audience=None):
    """The chat's answer from the documents ``audience`` may read; ``ticket`` is released once the answer is sent
    (by the caller when this raises)."""
    model = await run_in_threadpool(chat_model, pool, kb)
    prepared = await run_in_threadpool(
        prepare_chat, catalog, store, kb, model, messages, settings, max_tokens=params.max_tokens, audience=audience
    )
    head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": kb.slug}
    meta = {"mode": prepared.mode, "kb_mode": kb.active_mode, "adapter": prepared.adapter_id}
    if "delta" in prepared.extra:  # the documents changed since the adapter's snapshot, read from the prompt
        meta["delta"] = prepared.extra["delta"]
    if "restricted" in prepared.extra:  # an adapter would answer from documents this caller may not read
        meta["restricted"] = prepared.extra["restricted"]
    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        return EventSourceResponse(_events(model, prepared, params, head, meta, include_usage, ticket), ping=15)
    completion = await answer(model, prepared, params)
    ticket.release()
    message = {"role": "assistant", "content": completion.text}
    return JSONResponse(
        {
            "id": head["id"],
            "object": "chat.completion",
            "created": head["created"],
            "model": head["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": completion.finish_reason, "logprobs": None}],
            "usage": _usage(completion),
            "sources": prepared.sources_json(),
            "citations": await run_in_threadpool(prepared.citations_json, completion.text),
            "kadapt": meta,
        }
    )


async def _events(model, prepared, params, head, meta, include_usage: bool, ticket: ChatTicket):
    """The streamed answer as server-sent events; ``ticket`` is released when it ends (answered, failed, or the
    client went away)."""
    try:
        async for event in _answer_events(model, prepared, params, head, meta, include_usage):
            yield event
    finally:
        ticket.release()


async def _answer_events(model, prepared, params, head, meta, include_usage: bool) -> AsyncIterator[dict[str, str]]:
    def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> dict[str, str]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        payload = {"id": head["id"], "object": "chat.completion.chunk", "created": head["created"]}
        return {"data": json.dumps(payload | {"model": head["model"], "choices": [choice], **extra})}

    yield chunk({"role": "assistant", "content": ""}, sources=prepared.sources_json(), kadapt=meta)
    final = None
    pieces: list[str] = []
    async for piece in stream_answer(model, prepared, params):
        if isinstance(piece, str):
            pieces.append(piece)
            yield chunk({"content": piece})
        elif isinstance(piece, GenerationFailed):
            yield {"data": json.dumps(error_body(400, piece.message, code="generation_failed"))}
            yield {"data": "[DONE]"}
            return
        else:
            final = piece
    # the answer as the client received it; scoring the documents' sentences is CPU work: off the event loop
    citations = await run_in_threadpool(prepared.citations_json, "".join(pieces))
    yield chunk({}, final.finish_reason if final else "stop", citations=citations)
    if include_usage and final is not None:
        payload = {"id": head["id"], "object": "chat.completion.chunk", "created": head["created"]}
        yield {"data": json.dumps(payload | {"model": head["model"], "choices": [], "usage": _usage(final)})}
    yield {"data": "[DONE]"}
