"""What every response of the server gets, whatever route answered it: security headers, a bound on request
bodies, and CORS only for the origins an admin listed.

- Headers: ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``, ``Referrer-Policy``, a
  Content-Security-Policy (nothing at all for JSON; the report's for the API's HTML report; only
  ``frame-ancestors 'none'`` for the interactive API docs, which load their script from a CDN) and
  ``Cache-Control: no-store`` (answers are per caller). The console sets its own (``kadapt.web.render``);
  a header a response already has is kept.
- Bodies: a request whose ``Content-Length`` is over ``KADAPT_MAX_REQUEST_BYTES`` is refused with 413 before
  anything reads it; a body sent without a length (chunked) is counted as it streams in and refused as soon
  as it passes the limit.
- CORS: with ``KADAPT_CORS_ORIGINS`` empty no ``Access-Control-Allow-Origin`` is ever sent, so browsers keep
  other sites' pages from reading answers; with origins listed, Starlette's ``CORSMiddleware`` serves them.
- Proxies: with ``KADAPT_TRUSTED_PROXIES`` listed, uvicorn's ``ProxyHeadersMiddleware`` (outermost) takes the
  client address from ``X-Forwarded-For`` and the scheme from ``X-Forwarded-Proto``, but only on connections from
  a listed proxy; otherwise the socket peer is the client, whatever headers it sends. Installed here rather
  than left to the server, so the app behaves the same under any ASGI server (``kadapt serve`` turns uvicorn's
  own handling off, whose default trusts 127.0.0.1).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kadapt.api.errors import body_too_large
from kadapt.settings import Settings

__all__ = ["API_HEADERS", "BodySizeLimit", "RequestTooLarge", "SecurityHeaders", "install_security"]

API_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
JSON_CSP = "default-src 'none'; frame-ancestors 'none'"
# the report page: inline styles and inline SVG, no script (as on the console, kadapt.web.render.REPORT_CSP)
HTML_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; frame-ancestors 'none'"
DOCS_CSP = "frame-ancestors 'none'"
DOCS_PATHS = ("/docs", "/redoc")


class SecurityHeaders:
    """Adds :data:`API_HEADERS`, a Content-Security-Policy and ``no-store`` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in API_HEADERS.items():
                    headers.setdefault(name, value)
                if path.startswith(DOCS_PATHS):
                    policy = DOCS_CSP
                elif headers.get("content-type", "").startswith("text/html"):
                    policy = HTML_CSP
                else:
                    policy = JSON_CSP
                headers.setdefault("content-security-policy", policy)
                if not path.startswith("/ui/static/"):
                    headers.setdefault("cache-control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RequestTooLarge(StarletteHTTPException):
    """Raised from ``receive`` once a streamed body passes the limit; rendered by the API's 413 handler."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail="request body too large")


class BodySizeLimit:
    """Refuses a request body over ``max_bytes`` with 413: at once when its Content-Length says so (the route
    never runs), else as soon as the bytes received pass the limit.

    Starlette's own limit (FastAPI's ``max_body_size``) answers a plain-text "Content Too Large" that does not
    say what the limit is, and lets a route that does not read its body run before replacing its answer."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.strip().isdigit() and int(length) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise RequestTooLarge()
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except RequestTooLarge:  # read outside a route (the API's handler answers those inside one)
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(body_too_large(self.max_bytes), status_code=413, headers={"connection": "close"})
        await response(scope, receive, send)


def install_security(app: FastAPI, settings: Settings) -> None:
    """Add the middlewares above (and CORS when origins are listed); call it after every other middleware."""
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(SecurityHeaders)
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
            allow_credentials=False,  # keys travel in headers, never in cookies, across origins
            max_age=600,
        )
    if settings.trusted_proxies:  # added last, so it runs first: the throttle and the audit log see the client
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.trusted_proxies))
