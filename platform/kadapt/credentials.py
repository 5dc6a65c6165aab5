"""Credentials files: JSON files an operator keeps (settings, or a group's allowances) that connectors read at
each sync, so that no secret sits in a source's config or the catalog, and none is ever shown.

Two shapes share the reading: HTTP credentials per host (web and Confluence sources: headers, cookies, basic
auth) and the entries of other kinds (the s3 connector's access keys), validated by the connector's own model.
A file that cannot be read or is malformed fails the sync with a message naming the file and the problem; a
message never quotes a value.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kadapt.errors import ConfigError

__all__ = [
    "HostCredentials",
    "OAuthClient",
    "host_credentials",
    "http_client_options",
    "read_credentials_file",
    "credentials_entry",
]

MAX_CREDENTIALS_BYTES = 1 << 20
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token
Entry = TypeVar("Entry", bound=BaseModel)


def read_credentials_file(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in the ``what`` credentials file at ``path`` (e.g. "web"), or a ConfigError."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_CREDENTIALS_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} credentials file {path}: {exc.strerror or exc}") from None
    try:
        if len(data) > MAX_CREDENTIALS_BYTES:
            raise ValueError(f"over {MAX_CREDENTIALS_BYTES:,} bytes")
        entries = json.loads(data)
        if not isinstance(entries, dict):
            raise ValueError("expected a JSON object of entries")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"the {what} credentials file {path} is not valid: {exc}") from None
    return entries


def credentials_entry(model: type[Entry], entry: Any, key: str, path: Path, what: str) -> Entry:
    """``entry`` (the one named ``key`` in ``path``) validated as ``model``; a ConfigError names the fields and
    reasons, never the input (pydantic's own text would quote it)."""
    try:
        return model.model_validate(entry)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'entry'}: {error['msg']}"
            for error in exc.errors(include_input=False)
        )
        raise ConfigError(
            f"the entry for {key} in the {what} credentials file {path} is not valid: {problems}"
        ) from None


class _Basic(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str
    password: str


class OAuthClient(BaseModel):
    """An OAuth 2.0 client (client-credentials grant, RFC 6749 section 4.4): the source asks ``token_url`` for an
    access token and sends it as ``Authorization: Bearer``, asking again when the API answers 401 (expired)."""

    model_config = ConfigDict(extra="forbid")

    token_url: str = Field(description="e.g. https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token")
    client_id: str = Field(min_length=1, max_length=256)
    client_secret: str = Field(min_length=1, max_length=4096)
    scope: str = Field(default="", max_length=2048)

    @field_validator("token_url")
    @classmethod
    def _url(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in ("https", "http") or not parsed.hostname or parsed.username or parsed.password:
            raise ValueError("the token URL is an http(s) URL without credentials in it")
        return value

    @field_validator("client_id", "client_secret", "scope")
    @classmethod
    def _plain(cls, value: str) -> str:
        if not (value.isascii() and value.isprintable()):
            raise ValueError("holds a control or non-ASCII character")  # the value is not shown
        return value


class HostCredentials(BaseModel):
    """What a source sends to an HTTP host (an entry of a web credentials file)."""

    model_config = ConfigDict(extra="forbid")

    headers: dict[str, str] = Field(default_factory=dict)
    cookies: dict[str, str] = Field(default_factory=dict)
    basic: _Basic | None = None
    oauth: OAuthClient | None = None
    # a Google service account's JSON key, as the Cloud console downloads it (Google Drive sources)
    google_service_account: dict[str, str] | None = None
    google_scopes: list[str] = Field(default_factory=lambda: ["https://www.googleapis.com/auth/drive.readonly"])

    @field_validator("google_service_account")
    @classmethod
    def _service_account(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            missing = {"client_email", "private_key", "token_uri"} - set(value)
            if missing or value.get("type", "service_account") != "service_account":
                raise ValueError(f"not a service account key (missing {', '.join(sorted(missing)) or 'its type'})")
        return value

    @field_validator("headers", "cookies")
    @classmethod
    def _plain(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name[:40]!r} is not a valid name")
            if not (text.isascii() and text.isprintable()):  # the value is not shown
                raise ValueError(f"the value of {name!r} holds a control or non-ASCII character")
        return value


def host_credentials(files: tuple, scheme: str, netloc: str) -> HostCredentials | None:
    """The credentials for ``netloc`` (host, or host:port as in the source's URL) in the first of ``files``
    that has an entry for it, or None: an entry named by the host alone is for https; plain http needs an entry
    named ``http://host[:port]`` (credentials in clear, on a network the admin trusts)."""
    key = netloc if scheme == "https" else f"{scheme}://{netloc}"
    for path in files:
        entries = read_credentials_file(path, "web")
        found = {str(host).lower(): entry for host, entry in entries.items()}.get(key.lower())
        if found is not None:
            return credentials_entry(HostCredentials, found, key, path, "web")
    return None


def http_client_options(credentials: HostCredentials | None, user_agent: str) -> dict:
    """An HTTP client's headers, cookies and authentication: ``user_agent``, then the host's credentials."""
    headers = {"User-Agent": user_agent}
    if credentials is None:
        return {"headers": headers}
    basic, oauth, google = credentials.basic, credentials.oauth, credentials.google_service_account
    auth = httpx.BasicAuth(basic.username, basic.password) if basic else None
    if oauth:
        auth = OAuthClientAuth(oauth)
    elif google:
        auth = GoogleServiceAccountAuth(google, credentials.google_scopes)
    return {"headers": headers | credentials.headers, "cookies": credentials.cookies or None, "auth": auth}


class OAuthClientAuth(httpx.Auth):
    """httpx authentication by an OAuth 2.0 client: a token asked for once and again after a 401 (httpx's
    documented flow: the token request goes through the same client, its network checks included)."""

    # False: the API's responses stay streams (the caller bounds what it reads); only the token's is read here
    requires_response_body = False

    def __init__(self, client: OAuthClient) -> None:
        self.client = client
        self.token: str | None = None

    def _token_request(self) -> httpx.Request:
        form = {"grant_type": "client_credentials", "client_id": self.client.client_id}
        form |= {"client_secret": self.client.client_secret} | (
            {"scope": self.client.scope} if self.client.scope else {}
        )
        return httpx.Request("POST", self.client.token_url, data=form, headers={"Accept": "application/json"})

    def _read_token(self, response: httpx.Response) -> str:
        data = response.read()  # the token endpoint is the operator's (its URL is in their file)
        try:
            body = json.loads(data)
        except ValueError:
            body = {}
        token = body.get("access_token") if isinstance(body, dict) else None
        if response.status_code != 200 or not isinstance(token, str) or not token:
            reason = str(body.get("error", "")) if isinstance(body, dict) else ""
            host = urlparse(self.client.token_url).netloc
            raise ConfigError(
                f"the token endpoint at {host} refused the OAuth client (HTTP {response.status_code}"
                f"{': ' + reason[:80] if reason else ''}); check its client_id and client_secret"
            )
        return token

    def auth_flow(self, request: httpx.Request):
        for attempt in range(2):
            if self.token is None or attempt:
                self.token = self._read_token((yield self._token_request()))
            request.headers["Authorization"] = f"Bearer {self.token}"
            response = yield request
            if response.status_code != 401:
                return


class GoogleServiceAccountAuth(httpx.Auth):
    """httpx authentication as a Google service account: google-auth signs a JWT with the account's key and
    trades it at the key's token_uri for an access token (RFC 7523), again after a 401."""

    def __init__(self, info: dict[str, str], scopes: list[str]) -> None:
        self.info, self.scopes = info, scopes
        self.credentials = None

    def _refresh(self) -> str:
        import google.auth.exceptions
        import google.auth.transport.requests
        from google.oauth2 import service_account

        try:
            if self.credentials is None:
                self.credentials = service_account.Credentials.from_service_account_info(self.info, scopes=self.scopes)
            self.credentials.refresh(google.auth.transport.requests.Request())
        except (ValueError, google.auth.exceptions.GoogleAuthError) as exc:
            host = urlparse(self.info.get("token_uri", "")).netloc
            first = exc.args[0] if exc.args else exc
            reason = str(first).split(":")[0][:80]  # the error code, not the response (never the key)
            raise ConfigError(
                f"Google refused the service account {self.info.get('client_email', '')!r} at {host} ({reason}); "
                "check its key in the web credentials file and that the key is not disabled"
            ) from None
        return str(self.credentials.token)

    def auth_flow(self, request: httpx.Request):
        for attempt in range(2):
            if self.credentials is None or not self.credentials.token or attempt:
                self._refresh()
            request.headers["Authorization"] = f"Bearer {self.credentials.token}"
            response = yield request
            if response.status_code != 401:
                return
