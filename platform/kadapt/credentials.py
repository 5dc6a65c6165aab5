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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kadapt.errors import ConfigError

__all__ = ["HostCredentials", "host_credentials", "http_client_options", "read_credentials_file", "credentials_entry"]

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


class HostCredentials(BaseModel):
    """What a source sends to an HTTP host (an entry of a web credentials file)."""

    model_config = ConfigDict(extra="forbid")

    headers: dict[str, str] = Field(default_factory=dict)
    cookies: dict[str, str] = Field(default_factory=dict)
    basic: _Basic | None = None

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
    import httpx

    headers = {"User-Agent": user_agent}
    if credentials is None:
        return {"headers": headers}
    basic = credentials.basic
    return {
        "headers": headers | credentials.headers,
        "cookies": credentials.cookies or None,
        "auth": httpx.BasicAuth(basic.username, basic.password) if basic else None,
    }
