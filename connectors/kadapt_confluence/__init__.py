"""The ``confluence`` connector: the pages of a Confluence space or page tree, and their attachments, through
Confluence's REST API (Cloud at ``https://<site>.atlassian.net/wiki`` and Data Center alike).

A sync lists the pages with their version numbers only; a page's body (storage format, read as HTML) and an
attachment's file are downloaded only when their version differs from the one kadapt holds. Pages and
attachments gone from the listing leave the KB; a listing that fails (the site down, the token refused or
expired, the space gone) fails the sync before anything changes.

Credentials are those of the site's host in the web credentials file (``KADAPT_WEB_CREDENTIALS``, or the KB's
group's ``web_credentials``): Cloud takes basic auth with an account's e-mail and an API token, Data Center a
personal access token as ``Authorization: Bearer``. A ``429`` or ``503`` is retried after its ``Retry-After``
(at most a minute, four tries). Every request goes to the configured site only: the API's own links (``next``,
``download``) are followed as paths on that site, never as URLs to elsewhere.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from html import escape
from urllib.parse import urlencode, urlparse

from langchain_core.documents import Document
from pydantic import Field, field_validator, model_validator

from kadapt.contracts import (
    DEFAULT_INCLUDE,
    ApiConnector,
    ApiError,
    ConnectorConfig,
    ListingIncomplete,
    LoadFailure,
    PathFilter,
    Unchanged,
    api_bytes,
    base_url,
    check_size,
    hookimpl,
    parse_document,
)
from kadapt.errors import DocumentLoadError, InvalidInput

__all__ = ["ConfluenceConnector"]

USER_AGENT = "kadapt-confluence-connector/0.1"
_SPACE_KEY = re.compile(r"~?[A-Za-z0-9_-]{1,255}")  # personal spaces start with ~
_PAGE_SIZE = 50
_MAX_LISTING_PAGES = 10_000  # pages of one listing's results (a server whose next links never end stops here)
_MAX_ATTACHMENTS = 1_000  # of one page
_PERMISSION_EXPAND = "version,ancestors,restrictions.read.restrictions.group,restrictions.read.restrictions.user"
_MAX_API_BYTES = 16 << 20  # one JSON page of a listing


class ConfluenceConfig(ConnectorConfig):
    url: str = Field(description="The site: https://<site>.atlassian.net/wiki (Cloud) or the Data Center base URL.")
    space: str | None = Field(default=None, description="Space key whose pages are read (e.g. HR).")
    root_page: str | None = Field(default=None, description="Page id: read this page and every page under it.")
    attachments: bool = Field(default=True, description="Also read the pages' attachments (PDF, Office, text).")
    include: list[str] = Field(
        default_factory=lambda: list(DEFAULT_INCLUDE), description="gitignore-style patterns of attachment names."
    )
    max_pages: int = Field(default=10_000, ge=1, description="Stop after this many pages (the listing is incomplete).")
    permissions: bool = Field(
        default=False,
        description="Carry each page's view restrictions (its own and its ancestors') as its readers: only those "
        "groups may read it, and its attachments, in kadapt.",
    )
    group_map: dict[str, str] = Field(
        default_factory=dict,
        description="Confluence group -> kadapt group for permissions; when given, a group it does not name is "
        "dropped (when empty, every group keeps its name).",
    )
    timeout: float = Field(default=30.0, gt=0, le=120, description="Seconds to wait for each request (at most 120).")

    @field_validator("url")
    @classmethod
    def _site(cls, value: str) -> str:
        return base_url(value, "https://example.atlassian.net/wiki")

    @field_validator("space")
    @classmethod
    def _space(cls, value: str | None) -> str | None:
        if value is not None and not _SPACE_KEY.fullmatch(value):
            raise ValueError("a space key is letters, digits, '_' or '-' (a personal space starts with '~')")
        return value

    @field_validator("root_page")
    @classmethod
    def _page(cls, value: str | None) -> str | None:
        if value is not None and not (value.isascii() and value.isdigit() and len(value) <= 20):
            raise ValueError("a page id is a number (the digits in the page's URL)")
        return value

    @model_validator(mode="after")
    def _one_start(self) -> ConfluenceConfig:
        if not self.space and not self.root_page:
            raise ValueError("give a space key or a root_page id")
        return self


@dataclass(frozen=True)
class _Item:
    """A page or an attachment as the listing shows it."""

    locator: str
    version: str
    title: str
    path: str  # the API path that returns its content: a page's body, an attachment's download
    link: str  # where a person opens it
    readers: tuple[str, ...] | None = None  # kadapt groups that may read it (permissions on); None: everyone


class ConfluenceConnector(ApiConnector):
    kind = "confluence"
    user_agent = USER_AGENT
    Config = ConfluenceConfig
    description = "Pages and attachments of a Confluence space or page tree; re-syncs read only changed ones."
    config: ConfluenceConfig

    @property
    def api_base(self) -> str:
        return self.config.url

    def load(self) -> Iterator[Document | Unchanged | LoadFailure | ListingIncomplete]:
        self.check()
        with self.api_client(timeout=self.config.timeout) as self._client:
            pages = self._with_readers(self._listing()) if self.config.permissions else self._listing()
            for page in pages:
                if isinstance(page, ListingIncomplete):
                    yield page
                    return
                yield self._load(page, self._page_document)
                if self.config.attachments:
                    yield from self._attachments(page)

    # listing

    def _listing(self) -> Iterator[_Item | ListingIncomplete]:
        """The pages to read: the root page and its descendants, or the space's pages. A failure before the first
        page raises (the sync fails, nothing changes); one after it ends the listing as incomplete."""
        count, started = 0, False
        expand = {"expand": _PERMISSION_EXPAND if self.config.permissions else "version"}
        if self.config.root_page:
            path, params = f"/rest/api/content/{self.config.root_page}/descendant/page", expand
        else:
            path = "/rest/api/content"
            params = {"spaceKey": self.config.space, "type": "page", "status": "current"} | expand
        try:
            if self.config.root_page:
                root = self._json(f"/rest/api/content/{self.config.root_page}", expand)
                count, started = 1, True
                yield self._page_item(root)
            for entry in self._paged(path, params):
                started = True
                if count >= self.config.max_pages:
                    yield ListingIncomplete(
                        f"the source holds more than max_pages={self.config.max_pages} pages; raise it to read them "
                        "all (nothing was deleted)"
                    )
                    return
                count += 1
                yield self._page_item(entry)
        except ApiError as exc:
            if not started:
                raise InvalidInput(f"cannot list the pages of {self._where()}: {exc.message}") from None
            yield ListingIncomplete(
                f"the listing of {self._where()} failed part-way ({exc.message}); nothing was deleted"
            )

    def _with_readers(self, listing: Iterator[_Item | ListingIncomplete]) -> Iterator[_Item | ListingIncomplete]:
        """The listing (read in full first) with each page's readers: the groups allowed by its own view
        restriction and every ancestor's; its version marks them, so a change of restrictions re-reads it."""
        self._restrictions: dict[str, tuple[frozenset[str] | None, list[str]]] = {}
        items = list(listing)
        for item in items:
            if isinstance(item, ListingIncomplete):
                yield item
                return
            readers = self._readers(item.locator.removeprefix("pages/"))
            yield replace(item, readers=readers, version=_versioned(item.version, readers))

    def _readers(self, page_id: str) -> tuple[str, ...] | None:
        own, ancestors = self._restrictions.get(page_id, (None, []))
        allowed: frozenset[str] | None = None
        for restriction in [own, *(self._ancestor_restriction(ancestor) for ancestor in ancestors)]:
            if restriction is not None:
                allowed = restriction if allowed is None else allowed & restriction
        if allowed is None:
            return None
        mapping = self.config.group_map  # with a mapping, a group it does not name is dropped (no name clashes)
        return tuple(sorted({mapping.get(group, "" if mapping else group) for group in allowed} - {""}))

    def _ancestor_restriction(self, page_id: str) -> frozenset[str] | None:
        """An ancestor's view restriction; one above the listed pages (a root page's) is asked for once."""
        if not page_id.isdigit():
            return frozenset()  # not a page id the API should send: fails closed
        if page_id not in self._restrictions:
            entry = self._json(f"/rest/api/content/{page_id}", {"expand": _PERMISSION_EXPAND})
            self._restrictions[page_id] = (_read_restriction(entry), [])
        return self._restrictions[page_id][0]

    def _attachments(self, page: _Item) -> Iterator[Document | Unchanged | LoadFailure | ListingIncomplete]:
        page_id = page.locator.removeprefix("pages/")
        wanted = PathFilter(self.config.include, [], hidden=True)
        try:
            entries = list(
                itertools.islice(
                    self._paged(f"/rest/api/content/{page_id}/child/attachment", {"expand": "version"}),
                    _MAX_ATTACHMENTS + 1,
                )
            )
        except ApiError as exc:
            yield ListingIncomplete(
                f"cannot list the attachments of page {page_id}: {exc.message}; nothing was deleted"
            )
            return
        if len(entries) > _MAX_ATTACHMENTS:
            yield ListingIncomplete(
                f"page {page_id} has more than {_MAX_ATTACHMENTS:,} attachments; the first were read"
            )
            entries = entries[:_MAX_ATTACHMENTS]
        for entry in entries:
            name = str(entry.get("title") or "")
            download = str(entry.get("_links", {}).get("download") or "")
            if not name or not wanted(name) or not download.startswith("/"):
                continue
            size = entry.get("extensions", {}).get("fileSize")
            item = _Item(
                f"attachments/{entry.get('id')}",
                _versioned(str(entry.get("version", {}).get("number", "")), page.readers),
                name,
                download,
                self.config.url + download,
                page.readers,
            )
            try:
                if isinstance(size, int):
                    check_size(size, self.settings.max_document_bytes, name)
            except DocumentLoadError as exc:
                yield LoadFailure(item.locator, exc.message)
                continue
            yield self._load(item, self._attachment_document)

    def _page_item(self, entry: dict) -> _Item:
        page_id = str(entry.get("id", ""))
        if not page_id.isdigit():
            raise ApiError(f"the API listed a page without a numeric id: {page_id[:40]!r}")
        webui = str(entry.get("_links", {}).get("webui") or f"/pages/viewpage.action?pageId={page_id}")
        item = _Item(
            f"pages/{page_id}",
            str(entry.get("version", {}).get("number", "")),
            str(entry.get("title") or f"page {page_id}"),
            f"/rest/api/content/{page_id}",
            self.config.url + webui if webui.startswith("/") else self.config.url,
        )
        if self.config.permissions:
            ancestors = [str(a.get("id")) for a in entry.get("ancestors", []) if isinstance(a, dict)]
            self._restrictions[page_id] = (_read_restriction(entry), ancestors)
        return item

    # reading

    def _load(self, item: _Item, read) -> Document | Unchanged | LoadFailure:
        if item.version and self.known_versions.get(item.locator) == item.version:
            return Unchanged(item.locator)
        try:
            text, title = read(item)
        except DocumentLoadError as exc:
            return LoadFailure(item.locator, exc.message)
        metadata = {"locator": item.locator, "version": item.version or None, "title": title, "url": item.link}
        if item.readers is not None:
            metadata["readers"] = list(item.readers)
        return Document(page_content=text, metadata=metadata)

    def _page_document(self, item: _Item) -> tuple[str, str]:
        page = self._json(item.path, {"expand": "body.storage,version"})
        body = str(page.get("body", {}).get("storage", {}).get("value") or "")
        title = str(page.get("title") or item.title)
        html = f"<!doctype html><html><head><title>{escape(title)}</title></head><body>{body}</body></html>"
        parsed = parse_document(html.encode(), f"{item.locator}.html", settings=self.settings, suffix=".html")
        return parsed.text, title

    def _attachment_document(self, item: _Item) -> tuple[str, str]:
        data = self._get(item.path, None, self.settings.max_document_bytes)
        parsed = parse_document(data, item.title, settings=self.settings)
        return parsed.text, item.title

    # HTTP

    def _paged(self, path: str, params: dict) -> Iterator[dict]:
        """Every result of a paged API listing, following its ``next`` links (as paths on the site)."""
        query: dict | None = params | {"limit": _PAGE_SIZE, "start": 0}
        for _ in range(_MAX_LISTING_PAGES):
            if not path:
                return
            body = self._json(path, query)
            results = body.get("results")
            if not isinstance(results, list):
                raise ApiError(f"{path} answered without a list of results")
            yield from (entry for entry in results if isinstance(entry, dict))
            following = str(body.get("_links", {}).get("next") or "")
            path, query = self._next(following), None
        if path:
            raise ApiError(f"a listing went past {_MAX_LISTING_PAGES:,} pages of results")

    def _next(self, following: str) -> str:
        """The path of the next page of a listing: Cloud's and Data Center's ``next`` links are paths below the
        site (Cloud's start with its /wiki context); anything else is refused, never fetched."""
        if not following:
            return ""
        context = urlparse(self.config.url).path
        if context and following.startswith(context + "/rest/"):
            following = following[len(context) :]
        if not following.startswith("/rest/api/") or "://" in following:
            raise ApiError(f"the API's next link {following[:80]!r} is not a path on the site")
        return following

    def _json(self, path: str, params: dict | None) -> dict:
        data = self._get(path, params, _MAX_API_BYTES)
        try:
            body = json.loads(data)
        except ValueError:
            raise ApiError(f"{path} answered with something other than JSON (is {self.config.url} the site?)") from None
        if not isinstance(body, dict):
            raise ApiError(f"{path} answered with JSON that is not an object")
        return body

    def _url(self, path: str, params: dict | None) -> str:
        return self.config.url + path + (("&" if "?" in path else "?") + urlencode(params) if params else "")

    def _get(self, path: str, params: dict | None, limit: int) -> bytes:
        """GET a path of the site (429 and 503 retried after their Retry-After), at most ``limit`` bytes."""
        try:  # a redirect is an error too: the API never sends one for what is read here
            return api_bytes(self._client, self._url(path, params), limit=limit)
        except ApiError as exc:
            raise _explained(exc, self.config.url) from None

    def _where(self) -> str:
        start = f"space {self.config.space}" if self.config.space else f"page {self.config.root_page}"
        return f"{start} at {self.config.url}"


def _read_restriction(entry: dict) -> frozenset[str] | None:
    """The groups a page's own view restriction allows (None: it has none). Fails closed: a restriction to users
    only, or one the answer does not show in full (no restrictions expanded, a partial list), allows no group:
    such a page is read by admins only (users are not kadapt groups, and leaking is worse than hiding)."""
    restrictions = entry.get("restrictions")
    read = ((restrictions or {}).get("read") or {}).get("restrictions") if isinstance(restrictions, dict) else None
    if not isinstance(read, dict) or not isinstance(read.get("group"), dict) or not isinstance(read.get("user"), dict):
        return frozenset()  # the API did not say: not taken for "unrestricted"
    group_list, user_list = read["group"].get("results"), read["user"].get("results")
    if not isinstance(group_list, list) or not isinstance(user_list, list):
        return frozenset()
    for listed, part in ((group_list, read["group"]), (user_list, read["user"])):
        if isinstance(part.get("size"), int) and part["size"] > len(listed):
            return frozenset()  # a page of a longer list
    groups = [g.get("name") for g in group_list if isinstance(g, dict)]
    if not groups and not user_list:
        return None
    return frozenset(str(group) for group in groups if group)


def _versioned(version: str, readers: tuple[str, ...] | None) -> str:
    """A version that changes with the readers too (a restriction can change while the page does not)."""
    if readers is None or not version:
        return version
    return f"{version}|readers:{hashlib.sha256(chr(31).join(readers).encode()).hexdigest()[:12]}"


def _explained(exc: ApiError, site: str) -> ApiError:
    """``exc`` with what to do about its status."""
    host = urlparse(site).netloc
    hints = {
        401: f"the site refused the credentials for {host} (missing, expired or revoked): an admin renews the API "
        "token or personal access token in KADAPT_WEB_CREDENTIALS, or in the web_credentials of the KB's group",
        403: "the account kadapt signs in with may not read this; grant it read access to the space",
        404: "no such space or page, or the account may not see it",
    }
    hint = hints.get(exc.status_code or 0)
    return ApiError(f"{exc.message} ({hint})", exc.status_code) if hint else exc


@hookimpl
def register_connectors(register):
    register(ConfluenceConnector)
