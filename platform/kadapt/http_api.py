"""Reads from a vendor's REST API for connectors (Confluence, Microsoft Graph, ...): a bounded GET, retried
after a ``429 Too Many Requests`` or ``503`` for as long as its ``Retry-After`` says (capped), through tenacity.

A response's body is read as a stream and dropped past ``limit`` bytes, so a huge or endless answer costs no
more; a status of 400 or more is an :class:`ApiError` carrying the status, for the connector to turn into a
message that says what to do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlparse

from kadapt.connectors import Connector
from kadapt.credentials import host_credentials, http_client_options
from kadapt.errors import DocumentLoadError
from kadapt.network import check_public_host, public_http_client

if TYPE_CHECKING:
    import httpx

__all__ = ["ApiConnector", "ApiError", "ApiResponse", "api_bytes", "api_get", "api_json", "base_url"]

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


def api_bytes(client: httpx.Client, url: str, *, limit: int) -> bytes:
    """The body of a GET of ``url`` that answered 200 (any other status, a redirect included, is an ApiError)."""
    response = api_get(client, url, limit=limit)
    if response.status_code != 200:
        raise ApiError(f"HTTP {response.status_code} from {url}", response.status_code)
    return response.content


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


def base_url(value: str, example: str) -> str:
    """A REST API's base URL from a source's config: http(s), a host, no credentials, query or fragment (secrets
    go in the credentials files); lower-case host, no trailing slash. A ValueError says what is wrong, never
    quoting the value (it may hold a secret)."""
    try:
        parsed = urlparse(value)
        parsed.port  # noqa: B018 - parses lazily, raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc}); give one such as {example}") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"not an http(s) URL; give one such as {example}")
    if parsed.username or parsed.password or parsed.query or parsed.fragment:
        raise ValueError("a URL without credentials, query or fragment (credentials go in the credentials file)")
    return f"{parsed.scheme}://{parsed.netloc.lower()}{parsed.path.rstrip('/')}"


class ApiConnector(Connector):
    """A connector that reads a vendor's REST API at :attr:`api_base` (Confluence, Microsoft Graph, Drive): the
    address is checked when the source is added and at every connection, and the client signs in with the host's
    entry in the web credentials file (headers, basic, an OAuth client or a Google service account)."""

    user_agent: ClassVar[str] = "kadapt-connector/0.1"

    @property
    def api_base(self) -> str:  # pragma: no cover - every subclass names its own
        raise NotImplementedError

    def check(self) -> None:
        allowances = self.allowances
        check_public_host(
            self.api_base, allow_private=allowances.private_networks, private_hosts=allowances.private_hosts
        )

    def api_client(self, *, timeout: float, authenticated: bool = True) -> httpx.Client:
        """A client for the API's host that follows no redirect (a redirect is the caller's to judge), signed in
        with the host's credentials unless ``authenticated`` is False (a pre-authenticated download URL)."""
        allowances = self.allowances
        parsed = urlparse(self.api_base)
        found = host_credentials(allowances.web_credentials, parsed.scheme, parsed.netloc) if authenticated else None
        return public_http_client(
            allow_private=allowances.private_networks,
            private_hosts=allowances.private_hosts,
            timeout=timeout,
            follow_redirects=False,
            **http_client_options(found, self.user_agent),
        )
