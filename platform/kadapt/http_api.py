"""Reads from a vendor's REST API for connectors (Confluence, Microsoft Graph, ...): a bounded GET, retried
after a ``429 Too Many Requests`` or ``503`` for as long as its ``Retry-After`` says (capped), through tenacity.

A response's body is read as a stream and dropped past ``limit`` bytes, so a huge or endless answer costs no
more; a status of 400 or more is an :class:`ApiError` carrying the status, for the connector to turn into a
message that says what to do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kadapt.errors import DocumentLoadError

if TYPE_CHECKING:
    import httpx

__all__ = ["ApiError", "ApiResponse", "api_get", "api_json"]

MAX_RETRY_AFTER = 60.0  # a longer Retry-After is waited for this long, then the try counts
RETRIED = (429, 503)
REQUEST_DEADLINE = 300.0  # seconds one response may take in all (httpx's timeout bounds each read, not the whole)
RETRY_DEADLINE = 600.0  # no new try of a request after this many seconds


class ApiError(DocumentLoadError):
    """A request that failed: ``status_code`` is the HTTP status (None when no response came)."""

    def __init__(self, message: str, status_code: int | None = None, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after


@dataclass(frozen=True)
class ApiResponse:
    status_code: int
    headers: dict[str, str]  # lower-case names
    content: bytes


def _wait(state) -> float:
    """Seconds before the next try: the server's Retry-After in seconds (capped), else 2, 4, 8 s."""
    value = str(getattr(state.outcome.exception(), "retry_after", None) or "")
    return min(float(value), MAX_RETRY_AFTER) if value.isdigit() else float(2**state.attempt_number)


def api_get(client: httpx.Client, url: str, *, limit: int, tries: int = 4, headers: dict | None = None) -> ApiResponse:
    """GET ``url`` with ``client`` (which does not follow redirects: a 3xx comes back for the caller to judge),
    retrying a 429 or 503 up to ``tries`` times in all."""
    from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay

    retrying = Retrying(
        retry=retry_if_exception(lambda exc: isinstance(exc, ApiError) and exc.status_code in RETRIED),
        wait=_wait,
        stop=stop_after_attempt(tries) | stop_after_delay(RETRY_DEADLINE),
        reraise=True,
    )
    return retrying(_get_once, client, url, limit, headers)


def _get_once(client: httpx.Client, url: str, limit: int, headers: dict | None) -> ApiResponse:
    import time

    import httpx

    deadline = time.monotonic() + REQUEST_DEADLINE
    try:
        with client.stream("GET", url, headers=headers) as response:
            if response.status_code >= 400:
                raise ApiError(
                    f"HTTP {response.status_code} from {url}", response.status_code, response.headers.get("retry-after")
                )
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and "content-encoding" not in response.headers and int(declared) > limit:
                raise ApiError(f"{url} answers with {int(declared):,} bytes, over the limit of {limit:,}")
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise ApiError(f"{url} answered with more than {limit:,} bytes; stopped reading it")
                if time.monotonic() > deadline:  # a server that trickles its answer
                    raise ApiError(f"{url} took more than {REQUEST_DEADLINE:.0f} s to answer; stopped reading it")
                chunks.append(chunk)
            return ApiResponse(
                response.status_code, {key.lower(): value for key, value in response.headers.items()}, b"".join(chunks)
            )
    except httpx.HTTPError as exc:
        raise ApiError(f"could not reach {url}: {type(exc).__name__}: {exc}") from None


def api_json(client: httpx.Client, url: str, *, limit: int) -> dict[str, Any]:
    """The JSON object a GET of ``url`` answers (a 3xx or anything but an object is an ApiError)."""
    response = api_get(client, url, limit=limit)
    try:
        body = json.loads(response.content) if response.status_code == 200 else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ApiError(f"{url} did not answer with a JSON object (HTTP {response.status_code})", response.status_code)
    return body
