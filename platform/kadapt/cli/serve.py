"""``kadapt serve`` (the API server) and ``kadapt chat`` (a terminal chat with streamed answers)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from kadapt.cli import _context
from kadapt.cli._output import console, err_console


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("chat")(chat)


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Serve without API keys (local demos only).")] = False,
    preload: Annotated[str | None, typer.Option(help="Load this model at start-up instead of on first use.")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the OpenAI-compatible chat endpoint and the admin API (docs at /docs)."""
    import uvicorn

    from kadapt.api import create_app
    from kadapt.auth import server_secret

    settings = _context.settings()
    if no_auth:
        settings = settings.model_copy(update={"auth_disabled": True})
    if settings.auth_disabled:
        err_console.print("[yellow]warning:[/yellow] authentication is disabled; every caller is an admin")
    server_secret(settings)  # a KADAPT_SECRET_KEY that is too short stops the server here, with its reason
    app = create_app(settings)
    if preload:
        app.state.pool.get(preload)
    # forwarded headers are the app's to read (KADAPT_TRUSTED_PROXIES): uvicorn's default would trust 127.0.0.1
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5, proxy_headers=False)


def chat(
    kb: Annotated[str, typer.Argument(help="The KB to chat with.")],
    question: Annotated[str | None, typer.Option("--ask", "-q", help="Ask one question and exit.")] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="Longest answer, in tokens (default: a chat request's that sets none).")
    ] = None,
) -> None:
    """Chat with a KB in the terminal; answers stream as they are generated, followed by their sources and the
    sentence of each cited document that supports the answer."""
    from kadapt.errors import KadaptError
    from kadapt.kbs import get_kb
    from kadapt.models import get_model_pool
    from kadapt.serving import GenerationFailed, chat_model, chat_params, prepare_chat, stream_answer

    catalog, settings, store = _context.catalog(), _context.settings(), _context.store()
    kb_row = get_kb(catalog, kb)
    with console.status(f"loading {kb_row.base_model}"):
        model = chat_model(get_model_pool(), kb_row)
    history: list[dict[str, str]] = []
    params = chat_params(settings, max_tokens=max_tokens)  # as /v1/chat/completions decodes

    async def answer(text: str) -> str:
        history.append({"role": "user", "content": text})
        prepared = prepare_chat(catalog, store, kb_row, model, history, settings, max_tokens=params.max_tokens)
        pieces = []
        async for piece in stream_answer(model, prepared, params):
            if isinstance(piece, GenerationFailed):
                raise KadaptError(piece.message)
            if isinstance(piece, str):
                pieces.append(piece)
                console.print(piece, end="", highlight=False, soft_wrap=True)
        console.print()
        reply = "".join(pieces)
        if prepared.adapter_id:
            console.print(f"  [dim]answered by the {kb_row.active_mode} adapter {prepared.adapter_id}[/dim]")
        quotes = {citation.index: citation.quote for citation in prepared.citations(reply)}
        for source in prepared.sources:
            console.print(f"  [dim][{source.index}] {source.locator} — {source.title}[/dim]", highlight=False)
            if source.index in quotes:
                # verbatim, and never read as rich markup: a document's "[b]" stays text
                console.print(f'      "{quotes[source.index]}"', style="dim", markup=False, highlight=False)
        history.append({"role": "assistant", "content": reply})
        return reply

    if question is not None:
        asyncio.run(answer(question))
        return
    console.print(f"Chatting with [bold]{kb}[/bold]. Empty line or Ctrl-D to quit.")
    while True:
        try:
            text = console.input("[bold]you>[/bold] ").strip()
        except EOFError:
            break
        if not text:
            break
        asyncio.run(answer(text))
