"""The ``s3`` connector: the objects of a bucket (under a prefix) in Amazon S3 or any S3-compatible store
(MinIO, Ceph, Garage, ...), read with boto3.

A re-sync lists the bucket and downloads only the objects whose ETag changed; an unchanged object costs no
request of its own. An object over ``KADAPT_MAX_DOCUMENT_BYTES`` is a document error without a download.

Credentials never sit in the source's config: they come from a JSON file the operator keeps
(``KADAPT_S3_CREDENTIALS``, or the ``s3_credentials`` of the KB's owner group), read at each sync. Without an
entry the bucket is read anonymously; the server's own AWS credentials (environment, ``~/.aws``, instance
roles) are never used, so a source cannot borrow them.

A listing that fails (the store down, the bucket gone, access denied) fails the sync before anything changes;
one that fails part-way reports the listing incomplete, so nothing is deleted. The endpoint must be a public
address unless the KB's groups may reach it (``KADAPT_ALLOW_PRIVATE_NETWORKS``, or the group's ``hosts``); it is
checked before each sync.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlparse

from langchain_core.documents import Document
from pydantic import BaseModel, ConfigDict, Field, field_validator

from kadapt.contracts import (
    DEFAULT_INCLUDE,
    Connector,
    ConnectorConfig,
    ListingIncomplete,
    LoadFailure,
    PathFilter,
    Unchanged,
    check_public_host,
    check_size,
    credentials_entry,
    hookimpl,
    parse_document,
    read_credentials_file,
)
from kadapt.errors import DocumentLoadError, InvalidInput

__all__ = ["S3Connector", "S3Credentials", "s3_credentials"]

# S3's bucket naming rules: 3-63 lower-case letters, digits, dots and hyphens, starting and ending with a letter or
# digit (no path, no query, nothing boto3 could take for another endpoint)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_REGION = re.compile(r"[a-z]{2}(-[a-z0-9]+){1,4}")
_MAX_KEY_BYTES = 1024  # S3's own limit on an object key
_AWS = "s3://"  # the credentials entry of every bucket on AWS itself (no endpoint given)


class S3Config(ConnectorConfig):
    bucket: str = Field(description="Bucket name (3-63 lower-case letters, digits, dots and hyphens).")
    prefix: str = Field(default="", description="Only read objects whose key starts with this (e.g. 'handbook/').")
    endpoint: str | None = Field(
        default=None,
        description="Endpoint URL of an S3-compatible store (e.g. https://minio.corp:9000); empty for AWS S3.",
    )
    region: str = Field(default="us-east-1", description="The bucket's region (signing needs it on AWS).")
    include: list[str] = Field(
        default_factory=lambda: list(DEFAULT_INCLUDE), description="gitignore-style patterns of keys to read."
    )
    exclude: list[str] = Field(default_factory=list, description="gitignore-style patterns of keys to skip.")
    # bounded, as the web connector's: a store that trickles must not hold a sync for hours
    timeout: float = Field(default=30.0, gt=0, le=300, description="Seconds to wait for each request (at most 300).")

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not _BUCKET.fullmatch(value) or ".." in value:
            raise ValueError(f"{value[:80]!r} is not an S3 bucket name (3-63 of a-z, 0-9, '.', '-')")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if len(value.encode()) > _MAX_KEY_BYTES or not value.isprintable():
            raise ValueError("a prefix is at most 1,024 bytes of printable characters")
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            parsed = urlparse(value)
            parsed.port  # noqa: B018 - parses lazily, raises ValueError on a bad port
        except ValueError as exc:
            raise ValueError(f"the endpoint is not a valid URL: {exc}") from None  # not echoed: it may hold a key
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("the endpoint is not an http(s) URL such as https://minio.corp:9000")
        if parsed.username or parsed.password:
            raise ValueError("an endpoint URL may not hold credentials; the operator's S3 credentials file holds them")
        if parsed.path.strip("/") or parsed.query or parsed.fragment:
            raise ValueError("an endpoint URL is scheme://host[:port] only; the bucket and prefix have their fields")
        return f"{parsed.scheme}://{parsed.netloc.lower()}"

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not _REGION.fullmatch(value):
            raise ValueError(f"{value[:40]!r} is not a region name such as us-east-1 or eu-central-1")
        return value


class S3Credentials(BaseModel):
    """An entry of an S3 credentials file: an access key, and a session token for temporary ones."""

    model_config = ConfigDict(extra="forbid")

    access_key_id: str = Field(min_length=1, max_length=256)
    secret_access_key: str = Field(min_length=1, max_length=1024)
    session_token: str | None = Field(default=None, max_length=8192)

    @field_validator("access_key_id", "secret_access_key", "session_token")
    @classmethod
    def _plain(cls, value: str | None) -> str | None:
        if value is not None and not (value.isascii() and value.isprintable()):
            raise ValueError("holds a control or non-ASCII character")  # the value itself is never shown
        return value


def _credentials_keys(endpoint: str | None, bucket: str) -> tuple[str, str]:
    """The entries that may hold a bucket's credentials, the bucket's own first, then its store's."""
    store = endpoint or _AWS
    return (f"{store}{bucket}" if store == _AWS else f"{store}/{bucket}"), store


def s3_credentials(files: tuple, endpoint: str | None, bucket: str) -> S3Credentials | None:
    """The credentials for ``bucket`` at ``endpoint`` (None: AWS) in the first of ``files`` with an entry for it:
    ``"<endpoint>/<bucket>"`` or ``"<endpoint>"`` (every bucket of that store), ``"s3://<bucket>"`` or ``"s3://"``
    on AWS. None when no file has one (the bucket is read anonymously). A file that cannot be read or is malformed
    fails the sync with a message naming the file and the problem, never a credential."""
    wanted = _credentials_keys(endpoint, bucket)
    for path in files:
        entries = {
            (key if key == _AWS else str(key).rstrip("/")): entry
            for key, entry in read_credentials_file(path, "S3").items()
        }
        for key in wanted:
            if key in entries:
                return credentials_entry(S3Credentials, entries[key], key, path, "S3")
    return None


@dataclass(frozen=True)
class _Object:
    key: str
    etag: str
    size: int


class S3Connector(Connector):
    kind = "s3"
    Config = S3Config
    description = "Objects of an S3 bucket (AWS or any S3-compatible store); re-syncs read only changed objects."
    config: S3Config

    def check(self) -> None:
        if self.config.endpoint:
            allowances = self.allowances
            check_public_host(
                self.config.endpoint,
                allow_private=allowances.private_networks,
                private_hosts=allowances.private_hosts,
            )

    def load(self) -> Iterator[Document | Unchanged | LoadFailure | ListingIncomplete]:
        self.check()
        client = self._client()
        wanted = PathFilter(self.config.include, self.config.exclude, hidden=True)
        limit = self.settings.max_document_bytes
        try:
            for item in self._list(client):
                if isinstance(item, ListingIncomplete):
                    yield item
                    return
                relative = item.key[len(self.config.prefix) :]
                if not relative or relative.endswith("/") or not wanted(relative):
                    continue  # a "folder" marker, or a key the patterns leave out
                yield self._load_object(client, item, limit)
        finally:
            client.close()

    def _client(self):
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config

        files = self.allowances.s3_credentials
        credentials = s3_credentials(files, self.config.endpoint, self.config.bucket)
        options = {
            "region_name": self.config.region,
            "connect_timeout": self.config.timeout,
            "read_timeout": self.config.timeout,
            "retries": {"mode": "standard", "max_attempts": 4},  # backs off on 429, 503 and dropped connections
            "user_agent_extra": "kadapt-s3-connector",
        }
        if credentials is None:
            options["signature_version"] = UNSIGNED  # anonymous: botocore looks for no credentials at all
        if self.config.endpoint:
            options["s3"] = {"addressing_style": "path"}  # the bucket in the path: the host is the endpoint's
        # a session of its own with explicit keys (or none): the server's environment, ~/.aws and instance role
        # stay out of it
        session = boto3.session.Session(
            aws_access_key_id=credentials.access_key_id if credentials else None,
            aws_secret_access_key=credentials.secret_access_key if credentials else None,
            aws_session_token=credentials.session_token if credentials else None,
            region_name=self.config.region,
        )
        client = session.client("s3", endpoint_url=self.config.endpoint, config=Config(**options))
        # every request goes out through kadapt's HTTP client, which checks each address as it connects (boto3's own
        # would resolve the name again after the check: DNS rebinding to a private or metadata address)
        sender = _PinnedSender(self.allowances, self.config.timeout, self._cap())
        client.meta.events.register("before-send.s3", sender)
        original_close = client.close

        def close() -> None:  # the boto3 client's close closes kadapt's HTTP client too
            sender.close()
            original_close()

        client.close = close
        return client

    def _cap(self) -> int:
        """The most bytes one response may hold: an object at the size limit, or a page of a listing."""
        return max(self.settings.max_document_bytes + 1, 32 << 20)

    def _list(self, client) -> Iterator[_Object | ListingIncomplete]:
        """Every object under the prefix; an error before the first page fails the sync (nothing changes), one
        after it ends the listing as incomplete (nothing is deleted)."""
        from botocore.exceptions import BotoCoreError, ClientError

        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.config.bucket, Prefix=self.config.prefix)
        listed = False
        try:
            for page in pages:
                listed = True
                for entry in page.get("Contents", []):
                    yield _Object(entry["Key"], str(entry.get("ETag", "")).strip('"'), int(entry.get("Size", 0)))
        except (BotoCoreError, ClientError) as exc:
            problem = f"cannot list {self._where()}: {_describe(exc)}"
            if not listed:
                raise InvalidInput(problem) from None  # the sync fails; nothing changes
            yield ListingIncomplete(problem + "; the objects listed before the error were read, nothing was deleted")

    def _load_object(self, client, item: _Object, limit: int) -> Document | Unchanged | LoadFailure:
        from botocore.exceptions import BotoCoreError, ClientError

        locator = item.key
        try:
            check_size(item.size, limit, "object")
        except DocumentLoadError as exc:
            return LoadFailure(locator, exc.message)
        version = item.etag or None
        if version is not None and self.known_versions.get(locator) == version:
            return Unchanged(locator)
        try:
            response = client.get_object(Bucket=self.config.bucket, Key=item.key)
            with response["Body"] as body:
                data = body.read(limit + 1)  # at most one byte past the limit, should the object have grown
            parsed = parse_document(data, PurePosixPath(item.key).name, settings=self.settings)
        except DocumentLoadError as exc:
            return LoadFailure(locator, exc.message)
        except (BotoCoreError, ClientError) as exc:
            return LoadFailure(locator, f"cannot read: {_describe(exc)}")
        etag = str(response.get("ETag", "")).strip('"') or version
        return Document(
            page_content=parsed.text,
            metadata={"locator": locator, "version": etag, "title": parsed.title, "url": self._object_url(item.key)},
        )

    def _where(self) -> str:
        return f"bucket {self.config.bucket!r}" + (f" at {self.config.endpoint}" if self.config.endpoint else "")

    def _object_url(self, key: str) -> str:
        from urllib.parse import quote

        if self.config.endpoint:
            return f"{self.config.endpoint}/{self.config.bucket}/{quote(key)}"
        return f"s3://{self.config.bucket}/{quote(key)}"


_HINTS = {
    "NoSuchBucket": "check the bucket name and endpoint",
    "AccessDenied": "add an access key for this bucket to the S3 credentials file (KADAPT_S3_CREDENTIALS or the "
    "group's s3_credentials)",
    "InvalidAccessKeyId": "the access key in the S3 credentials file is not known to the store",
    "SignatureDoesNotMatch": "the secret key in the S3 credentials file does not match its access key",
    "ExpiredToken": "the session token in the S3 credentials file has expired; renew it",
}


class _Raw:
    """A response body read in full, as botocore's AWSResponse and StreamingBody read a urllib3 response."""

    def __init__(self, content: bytes) -> None:
        import io

        self._content, self._stream = content, io.BytesIO(content)

    def stream(self, *args, **kwargs):
        yield self._content

    def read(self, amt: int | None = None) -> bytes:
        return self._stream.read(amt)

    def close(self) -> None:
        self._stream.close()


class _PinnedSender:
    """botocore's ``before-send`` handler: sends the signed request with kadapt's checked HTTP client and hands
    botocore the response (a body over ``cap`` bytes is an error, never held in memory)."""

    def __init__(self, allowances, timeout: float, cap: int) -> None:
        from kadapt.contracts import public_http_client

        self._client = public_http_client(
            allow_private=allowances.private_networks,
            private_hosts=allowances.private_hosts,
            timeout=timeout,
            follow_redirects=False,
        )
        self._cap = cap

    def close(self) -> None:
        self._client.close()

    def __call__(self, request, **kwargs):
        import httpx
        from botocore.awsrequest import AWSResponse
        from botocore.exceptions import HTTPClientError

        body = request.body
        if hasattr(body, "read"):
            body = body.read()
        headers = {key: value.decode() if isinstance(value, bytes) else value for key, value in request.headers.items()}
        try:
            with self._client.stream(request.method, request.url, headers=headers, content=body or None) as response:
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self._cap:
                        raise HTTPClientError(error=f"the response is over {self._cap:,} bytes")
                    chunks.append(chunk)
                return AWSResponse(request.url, response.status_code, dict(response.headers), _Raw(b"".join(chunks)))
        except httpx.HTTPError as exc:
            raise HTTPClientError(error=f"{type(exc).__name__}: {exc}") from None


def _describe(exc: Exception) -> str:
    """A short reason from a botocore error (its code and the store's message; never a credential)."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "error"))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        text = f"{code}" + (f" (HTTP {status})" if status else "")
        message = str(error.get("Message", ""))[:200]
        hint = _HINTS.get(code) or (_HINTS["AccessDenied"] if status in (401, 403) else None)
        return text + (f": {message}" if message else "") + (f"; {hint}" if hint else "")
    return f"{type(exc).__name__}: {str(exc)[:200]}"


@hookimpl
def register_connectors(register):
    register(S3Connector)
