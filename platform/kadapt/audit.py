"""The audit log: who changed what, from where, and how it went.

Every state-changing admin or editor action lands in the catalog's ``audit_events`` table, whichever way it
came in:

- the API and the web console, through :class:`AuditMiddleware`, which knows the audited routes
  (:data:`API_ACTIONS`, :data:`CONSOLE_ACTIONS`) and records each request to one of them once it is answered,
  refused attempts included, with the caller's key, address and the response's status;
- the CLI, whose audited commands ``kadapt.cli.audit`` wraps (actor ``cli:<os user>``);
- the sign-in throttle, which records ``auth.blocked`` when it starts blocking an address.

Nothing secret is ever recorded: no key, no request body, no source config. Targets come from the route's
path, the ``slug``/``id`` of the JSON an API answer returns, or what a handler passes to :func:`note`.
Admins read the log with ``GET /v1/audit`` and ``kadapt audit``.
"""

from __future__ import annotations

import getpass
import json
import logging
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import or_, select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kadapt.catalog import Catalog
from kadapt.catalog.models import AuditEvent, utc

__all__ = [
    "API_ACTIONS",
    "CONSOLE_ACTIONS",
    "NOT_AUDITED",
    "AuditMiddleware",
    "actor_of",
    "cli_actor",
    "list_events",
    "note",
    "record",
]

log = logging.getLogger("kadapt.audit")

# (method, route path) -> (action, what the answer names: "kb" (its slug), "source" or "job" (its id), None)
API_ACTIONS: dict[tuple[str, str], tuple[str, str | None]] = {
    ("POST", "/v1/kbs"): ("kb.create", "kb"),
    ("DELETE", "/v1/kbs/{slug}"): ("kb.delete", None),
    ("POST", "/v1/kbs/{slug}/sources"): ("source.add", "source"),
    ("PATCH", "/v1/kbs/{slug}/sources/{source_id}"): ("source.edit", None),
    ("DELETE", "/v1/kbs/{slug}/sources/{source_id}"): ("source.remove", None),
    ("POST", "/v1/kbs/{slug}/sync"): ("kb.sync", "job"),
    ("POST", "/v1/sources/{source_id}/notify"): ("source.notify", "job"),
    ("POST", "/v1/kbs/{slug}/augment"): ("kb.augment", "job"),
    ("POST", "/v1/kbs/{slug}/train"): ("kb.train", "job"),
    ("POST", "/v1/kbs/{slug}/adapt"): ("kb.adapt", "job"),
    ("POST", "/v1/kbs/{slug}/evaluate"): ("kb.evaluate", "job"),
    ("PUT", "/v1/kbs/{slug}/mode"): ("kb.set-mode", None),
    ("PUT", "/v1/kbs/{slug}/workload"): ("kb.workload", None),
    ("POST", "/v1/jobs/{job_id}/cancel"): ("job.cancel", "job"),
}
CONSOLE_ACTIONS: dict[tuple[str, str], tuple[str, str | None]] = {
    ("POST", "/ui/login"): ("console.sign-in", None),
    ("POST", "/ui/kbs"): ("kb.create", None),
    ("POST", "/ui/kbs/{slug}/sources"): ("source.add", None),
    ("POST", "/ui/kbs/{slug}/sources/{source_id}/edit"): ("source.edit", None),
    ("POST", "/ui/kbs/{slug}/sources/{source_id}/remove"): ("source.remove", None),
    ("POST", "/ui/kbs/{slug}/sync"): ("kb.sync", None),
    ("POST", "/ui/kbs/{slug}/adapt"): ("kb.adapt", None),
    ("POST", "/ui/kbs/{slug}/train"): ("kb.train", None),
    ("POST", "/ui/kbs/{slug}/mode"): ("kb.set-mode", None),
    ("POST", "/ui/kbs/{slug}/workload"): ("kb.workload", None),
    ("POST", "/ui/jobs/{job_id}/cancel"): ("job.cancel", None),
    ("POST", "/ui/keys"): ("key.create", None),
    ("POST", "/ui/keys/{key_id}/revoke"): ("key.revoke", None),
}
# state-changing routes that administer nothing: asking a KB, forgetting one's own conversation, signing out
NOT_AUDITED = {
    ("POST", "/v1/chat/completions"),
    ("POST", "/ui/chat/stream"),
    ("POST", "/ui/chat/conversations/{conversation_id}/delete"),  # one's own chat history
    ("POST", "/ui/logout"),
}

_CAPTURE_BYTES = 64_000  # enough for any audited answer's JSON; bigger ones are not looked into
_PATH_TARGETS = {"source_id": "source", "job_id": "job", "key_id": "key"}


def _clip(text: str | None, size: int) -> str:
    text = (text or "").replace("\n", " ").strip()
    return text if len(text) <= size else text[: size - 1] + "…"


def record(
    catalog: Catalog,
    *,
    actor: str,
    action: str,
    outcome: str,
    via: str,
    actor_name: str = "",
    client: str = "",
    kb: str | None = None,
    target: str = "",
    status: int | None = None,
    detail: str = "",
) -> None:
    """Append one event. ``outcome`` is ``ok``, ``denied`` (401/403) or ``failed``."""
    with catalog.session() as session:
        session.add(
            AuditEvent(
                actor=_clip(actor, 200),
                actor_name=_clip(actor_name, 200),
                via=via,
                client=_clip(client, 64),
                action=action,
                kb=_clip(kb, 64) or None,
                target=_clip(target, 300),
                outcome=outcome,
                status=status,
                detail=_clip(detail, 500),
            )
        )


def actor_of(principal) -> tuple[str, str]:
    """(actor, actor name) of a principal: ``key:<id>`` and the key's name; ``oidc:<issuer>|<sub>`` and the name
    of a user signed in with a company account."""
    if principal.subject:
        return f"oidc:{principal.subject}"[:200], principal.name
    if principal.key_id is None:
        return "auth-disabled", principal.name
    return f"key:{principal.key_id}", principal.name


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in this environment (a bare container)
        return "cli:unknown"


def outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    return "denied" if status in (401, 403) else "failed"


def note(request: Request, **fields: str) -> None:
    """Let a handler name what an audited request acted on (``target``, ``kb``, ``detail``); never a secret."""
    request.state.audit = getattr(request.state, "audit", {}) | fields


def list_events(
    catalog: Catalog,
    *,
    kb: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    before: int | None = None,
    limit: int = 100,
) -> tuple[list[AuditEvent], bool]:
    """Events newest first, filtered; and whether older ones remain (page on with ``before=<last id>``)."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit + 1)
    if kb:
        query = query.where(AuditEvent.kb == kb)
    if actor:
        query = query.where(or_(AuditEvent.actor == actor, AuditEvent.actor_name == actor))
    if since is not None:
        query = query.where(AuditEvent.at >= utc(since))
    if before is not None:
        query = query.where(AuditEvent.id < before)
    with catalog.session() as session:
        rows = list(session.scalars(query))
    return rows[:limit], len(rows) > limit


class AuditMiddleware:
    """Records every request to an audited API or console route once it has been answered.

    Only requests whose caller was identified (an API key, a console session) are recorded: anonymous
    failures are counted by the sign-in throttle, which records the block instead, so nobody can fill
    the log without a key.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = _match(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if matched is None:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        answer: dict[str, Any] = {"status": 500, "headers": Headers(), "body": bytearray()}
        keep_body = not scope["path"].startswith("/ui")  # console pages are HTML, and one shows a new key

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["headers"] = Headers(raw=message.get("headers", []))
            elif message["type"] == "http.response.body" and keep_body and len(answer["body"]) < _CAPTURE_BYTES:
                answer["body"] += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            principal = state.get("principal") or getattr(state.get("web_user"), "principal", None)
            if principal is not None:
                spec, params = matched
                event = self._event(scope, spec, params, principal, answer, state.get("audit", {}))
                try:
                    await run_in_threadpool(record, scope["app"].state.catalog, **event)
                except Exception:  # the action itself is done; a broken log must not turn it into an error
                    log.exception("could not record the audit event %s", event)

    @staticmethod
    def _event(
        scope: Scope, spec, params: dict[str, str], principal, answer: dict[str, Any], noted: dict[str, str]
    ) -> dict[str, Any]:
        action, names = spec
        status: int = answer["status"]
        actor, actor_name = actor_of(principal)
        console = scope["path"].startswith("/ui")
        event: dict[str, Any] = {
            "actor": actor,
            "actor_name": actor_name,
            "via": "console" if console else "api",
            "client": (scope.get("client") or ("", 0))[0],
            "action": action,
            "kb": params.get("slug"),
            "target": next((f"{_PATH_TARGETS[name]} {params[name]}" for name in _PATH_TARGETS if name in params), ""),
            "outcome": outcome_of(status),
            "status": status,
            "detail": "",
        }
        body = _json(answer) if not console else None
        if status >= 400 and isinstance(body, dict) and isinstance(body.get("error"), dict):
            event["detail"] = str(body["error"].get("message", ""))
        elif status < 400 and isinstance(body, dict):
            if names == "kb" and isinstance(body.get("slug"), str):
                event["kb"] = body["slug"]
            elif names in ("source", "job") and body.get("id") is not None:
                event["target"] = f"{names} {body['id']}"
                kb = (body.get("params") or {}).get("kb") if isinstance(body.get("params"), dict) else None
                event["kb"] = event["kb"] or (kb if isinstance(kb, str) else None)
        if console and status < 400:
            event.update(_from_location(answer["headers"].get("location", "")))
        event.update({name: value for name, value in noted.items() if name in ("kb", "target", "detail")})
        return event


# the audited routes as patterns over the request path: the same templates the routes are declared with
_PATTERNS = [
    (method, compile_path(path)[0], spec)
    for table in (API_ACTIONS, CONSOLE_ACTIONS)
    for (method, path), spec in table.items()
]


def _match(method: str, path: str) -> tuple[tuple[str, str | None], dict[str, str]] | None:
    for candidate, pattern, spec in _PATTERNS:
        if candidate == method and (found := pattern.match(path)):
            return spec, found.groupdict()
    return None


def _json(answer: dict[str, Any]) -> Any:
    if not answer["headers"].get("content-type", "").startswith("application/json"):
        return None
    try:
        return json.loads(bytes(answer["body"]))
    except ValueError:  # not all of it was kept, or not JSON after all
        return None


def _from_location(location: str) -> dict[str, str]:
    """What a console redirect names: ``/ui/kbs/<slug>`` a KB, ``?job=<id>`` a job."""
    parts = urlsplit(location)
    found: dict[str, str] = {}
    segments = parts.path.split("/")
    if len(segments) >= 4 and segments[1:3] == ["ui", "kbs"] and segments[3]:
        found["kb"] = segments[3]
    job = parse_qs(parts.query).get("job")
    if job:
        found["target"] = f"job {job[0]}"
    return found
