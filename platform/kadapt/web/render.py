"""Rendering web console pages: templates, error pages, and the security headers every ``/ui`` response gets."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, select_autoescape
from markdown_it import MarkdownIt
from markupsafe import Markup
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kadapt import __version__
from kadapt.errors import KadaptError, error_body
from kadapt.modes import TERMS
from kadapt.text import human_time
from kadapt.web.session import COOKIE, SignInRequired, WebUser, clear_cookie

__all__ = ["PREFIX", "REPORT_CSP", "PageRoute", "SecurityHeaders", "render", "markdown_html", "safe_next", "when"]

PREFIX = "/ui"
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
# the report is one self-contained page (inline styles, inline SVG charts) and runs no script at all
REPORT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
HEADERS = {
    "content-security-policy": PAGE_CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


@functools.cache
def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("kadapt", "templates"),
        autoescape=select_autoescape(default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.globals["version"] = __version__
    environment.globals["terms"] = TERMS
    environment.filters["when"] = when
    environment.filters["markdown"] = markdown_html
    return environment


@functools.cache
def _markdown(links: bool) -> MarkdownIt:
    # CommonMark with raw HTML off: a document's or an answer's own tags are shown as text, never run; images are
    # off (the console loads nothing from another host), and so are links in answers (a model's link is no source)
    parser = MarkdownIt("commonmark", {"html": False}).disable("image")
    parser.core.ruler.push("demote_headings", _demote_headings)  # the page's own title is the one h1
    return parser if links else parser.disable(["link", "autolink"])


def _demote_headings(state) -> None:
    for token in state.tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(6, int(token.tag[1]) + 1)}"


def markdown_html(text: str, *, links: bool = True) -> Markup:
    """``text`` (Markdown) as safe HTML: raw HTML in it is escaped, images are not loaded, link targets are
    markdown-it's safe ones (no ``javascript:``, ``vbscript:``, ``file:`` or ``data:``); ``links=False`` for
    generated text, whose links are shown as text."""
    return Markup(_markdown(links).render(text))


def when(moment: datetime | str | None) -> str:
    """A time as people read it (:func:`kadapt.text.human_time`): ``2026-12-07 14:03 UTC``; empty for none."""
    return human_time(moment)


def render(
    request: Request, template: str, user: WebUser | None = None, *, status: int = 200, **context: Any
) -> HTMLResponse:
    """``templates/web/<template>`` as a page; ``user`` fills the navigation and the forms' CSRF token."""
    html = (
        _environment()
        .get_template(f"web/{template}")
        .render(
            user=user.principal if user else None,
            csrf=user.csrf if user else context.pop("csrf", None),
            path=request.url.path,
            **context,
        )
    )
    return HTMLResponse(html, status_code=status)


def safe_next(target: str | None, default: str) -> str:
    """``target`` if it is a console page of this site (never another host), else ``default``."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" not in accept and ("application/json" in accept or "application/x-ndjson" in accept)


def _error(request: Request, status: int, message: str) -> Response:
    if _wants_json(request):
        return JSONResponse(error_body(status, message), status_code=status)
    user = getattr(request.state, "web_user", None)
    return render(request, "error.html.j2", user, status=status, status_code=status, message=message)


class PageRoute(APIRoute):
    """A console route: errors become HTML pages (JSON for scripts), and a missing sign-in sends a browser
    to the sign-in page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired as exc:
                if request.method == "GET" and not _wants_json(request):
                    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    response: Response = RedirectResponse(f"{PREFIX}/login?next={quote(target)}", status_code=303)
                else:
                    response = _error(request, 401, exc.message)
                if COOKIE in request.cookies:
                    clear_cookie(response)  # an expired session, or one whose key was revoked
                return response
            except KadaptError as exc:
                status = 400 if exc.status_code == 422 else exc.status_code
                response = _error(request, status, exc.message)
                response.headers.update(exc.headers)  # e.g. Retry-After with a 429 (too many jobs)
                return response
            except RequestValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg')}"
                    for error in exc.errors()
                )
                return _error(request, 400, f"invalid request: {problems}")

        return handle


class SecurityHeaders:
    """Adds the console's security headers (and ``no-store`` on pages) to every response under ``/ui``;
    a response that sets its own Content-Security-Policy keeps it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
                if not path.startswith(PREFIX + "/static/"):
                    headers.setdefault("cache-control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)
