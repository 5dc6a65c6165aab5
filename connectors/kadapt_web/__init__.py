"""The ``web`` connector: pages reached from a start URL or listed in a sitemap, on one host.

robots.txt is respected; page and depth limits bound the crawl; loopback and private-range addresses are
refused unless ``KADAPT_ALLOW_PRIVATE_NETWORKS`` is set, when the source is added and at every connection (a
name that resolves to a private address by the time of the fetch gets no request). A response is read as a
stream and dropped once it passes ``KADAPT_MAX_DOCUMENT_BYTES`` (after decompression), so a huge or endless
page costs no more.

Pages are fetched conditionally: a page that answered with an ``ETag`` or ``Last-Modified`` is asked again with
``If-None-Match`` / ``If-Modified-Since``, and a ``304 Not Modified`` costs no download: the page stays as it is
and the links it had (kept in the source's state) are followed as before.

A sync deletes a page kadapt holds only on a definite answer: the page answered 404 or 410, or no page
fetched in this crawl links it any more. When the crawl could not see the whole site - robots.txt or the
start page failed (robots.txt answering 404 means "no rules"), a page failed before its links were read,
or ``KADAPT_MAX_WEB_PAGES`` cut the crawl - the connector reports the listing incomplete and nothing is
deleted.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urldefrag, urljoin, urlparse
from urllib.robotparser import RobotFileParser

from langchain_core.documents import Document
from pydantic import Field, field_validator, model_validator

from kadapt.contracts import (
    Connector,
    ConnectorConfig,
    HostCredentials,
    ListingIncomplete,
    LoadFailure,
    Unchanged,
    check_public_host,
    check_size,
    hookimpl,
    host_credentials,
    http_client_options,
    parse_document,
    public_http_client,
    suffix_for_content_type,
)
from kadapt.errors import DocumentLoadError, InvalidInput

__all__ = ["HostCredentials", "WebConnector", "check_public_host", "host_credentials"]

USER_AGENT = "kadapt-web-connector/0.1 (+https://github.com/kadapt)"
_MAX_REDIRECTS = 5
_MAX_SITEMAP_DEPTH = 2  # an index of sitemaps is depth 1; the protocol nests no deeper, one more level is spared
_GONE = (404, 410)  # a definite "this page does not exist": the page leaves the KB
_NOT_MODIFIED = 304
_MAX_VALIDATOR = 512  # an ETag or Last-Modified longer than this is not kept (the page is fetched in full)
_MAX_LINKS_KEPT = 1_000  # links of a page kept in the source's state for a 304; a page with more is not kept


class _HTTPStatusError(DocumentLoadError):
    def __init__(self, status_code: int, url: str) -> None:
        hint = ""
        if status_code in (401, 403):
            hint = (
                f" (the site asks for a sign-in: an admin adds credentials for {urlparse(url).netloc} to "
                "KADAPT_WEB_CREDENTIALS, or to the web_credentials of the KB's group)"
            )
        super().__init__(f"HTTP {status_code} from {url}{hint}")
        self.status_code = status_code


class WebConfig(ConnectorConfig):
    url: str | None = Field(default=None, description="Start URL; links on the same host are followed.")
    sitemap: str | None = Field(default=None, description="Sitemap URL; the pages it lists are read.")
    max_pages: int = Field(default=100, ge=1, description="Stop after this many pages.")
    max_depth: int = Field(default=3, ge=0, description="Follow links at most this many hops from the start URL.")
    # bounded: a source must not hold a sync (and a job slot) for hours on a server that trickles
    timeout: float = Field(default=10.0, gt=0, le=120, description="Seconds to wait for each page (at most 120).")

    @field_validator("url", "sitemap")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and urlparse(value).scheme not in ("http", "https"):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @model_validator(mode="after")
    def _one_start(self) -> WebConfig:
        if not self.url and not self.sitemap:
            raise ValueError("give a start url or a sitemap")
        return self


def _normalize(url: str) -> str:
    return urldefrag(url)[0]


@dataclass
class _Response:
    """A response read in full, within the size limit."""

    url: str
    status_code: int
    headers: dict[str, str]
    content: bytes
    is_redirect: bool

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


@dataclass
class _Crawl:
    """A crawl under way: the site's rules, the start page, the pages waiting (url, depth) and every url queued."""

    robots: RobotFileParser
    start_page: str | None
    queue: deque[tuple[str, int]]
    seen: set[str]


class WebConnector(Connector):
    kind = "web"
    Config = WebConfig
    description = "Web pages from a start URL or a sitemap, on one host, respecting robots.txt."
    config: WebConfig

    def check(self) -> None:
        start = self.config.url or self.config.sitemap
        assert start is not None
        allowances = self.allowances
        check_public_host(start, allow_private=allowances.private_networks, private_hosts=allowances.private_hosts)

    def load(self) -> Iterator[Document | Unchanged | LoadFailure | ListingIncomplete]:
        self.check()
        start = self.config.url or self.config.sitemap
        assert start is not None
        parsed = urlparse(start)
        self._host, self._scheme = parsed.netloc, parsed.scheme
        max_pages = min(self.config.max_pages, self.settings.max_web_pages)
        credentials = host_credentials(self.allowances.web_credentials, self._scheme, self._host)
        self._signed_in = credentials is not None  # then the crawl keeps to the start URL's scheme too
        with public_http_client(
            allow_private=self.allowances.private_networks,
            private_hosts=self.allowances.private_hosts,
            timeout=self.config.timeout,
            **http_client_options(credentials, USER_AGENT),
        ) as client:
            self._client = client
            # each page's validators and links, for conditional requests at the next sync (pages not reached in
            # this crawl are fetched in full next time)
            self._previous = dict(self.context.state.get("pages") or {})
            self._pages: dict[str, dict] = {}
            self.context.state["pages"] = self._pages
            try:
                robots = self._robots(start)
            except DocumentLoadError as exc:
                yield ListingIncomplete(
                    f"robots.txt could not be read ({exc.message}), so no page was crawled; make it answer 200 "
                    "(or 404 for no rules) to the kadapt web connector"
                )
                return
            queue: deque[tuple[str, int]] = deque()
            if self.config.sitemap:
                yield from self._queue_sitemap(self.config.sitemap, queue)
            start_page = _normalize(self.config.url) if self.config.url else None
            if start_page:
                queue.append((start_page, 0))
            crawl = _Crawl(robots, start_page, queue, seen={url for url, _ in queue})
            yield from self._crawl(crawl, max_pages)
            yield from self._report_cut_short(crawl, max_pages)

    def _queue_sitemap(
        self, sitemap_url: str, queue: deque[tuple[str, int]]
    ) -> Iterator[LoadFailure | ListingIncomplete]:
        """Queue the pages the sitemap lists (their links are not followed); report the sitemaps left out."""
        listed, left_out = self._sitemap_urls(sitemap_url)
        for page in listed:
            queue.append((page, self.config.max_depth))
        for sitemap, problem in left_out:
            yield LoadFailure(sitemap, problem)
            yield ListingIncomplete(problem)

    def _crawl(self, crawl: _Crawl, max_pages: int) -> Iterator[Document | LoadFailure | ListingIncomplete]:
        """Visit the queued pages robots.txt allows, breadth first, until the queue or ``max_pages`` runs out."""
        pages = 0
        while crawl.queue and pages < max_pages:
            url, depth = crawl.queue.popleft()
            if not crawl.robots.can_fetch(USER_AGENT, url):
                continue
            pages += 1
            yield from self._visit(crawl, url, depth)

    def _visit(self, crawl: _Crawl, url: str, depth: int) -> Iterator[Document | LoadFailure | ListingIncomplete]:
        """Read one page and queue its links not seen yet, or report why it failed."""
        known = self._previous.get(url)
        if not (isinstance(known, dict) and known.get("version") and self.known_versions.get(url) == known["version"]):
            known = None  # the KB does not hold what the validators describe: fetched in full
        try:
            response = self._get(url, _conditional_headers(known))
        except DocumentLoadError as exc:
            if url != crawl.start_page and isinstance(exc, _HTTPStatusError) and exc.status_code in _GONE:
                return  # linked (or listed) but gone: not listed, so the KB drops it
            yield LoadFailure(url, exc.message)  # its last good version stays
            if url == crawl.start_page:
                yield ListingIncomplete(
                    f"the start page failed ({exc.message}), so no link was followed; pages not reached were kept"
                )
            elif depth < self.config.max_depth:
                yield ListingIncomplete(f"{url} failed ({exc.message}), so its links were not followed")
            return
        if response.status_code == _NOT_MODIFIED and known is not None:
            self._pages[url] = known
            yield Unchanged(url)
            links = [link for link in known.get("links", []) if isinstance(link, str) and self._same_host(link)]
            self._queue_links(crawl, links, depth)
            return
        try:
            document, links = self._page(url, response)
        except DocumentLoadError as exc:  # unreadable (a sign-in page in JSON, a parse budget): same rule
            yield LoadFailure(url, exc.message)
            if url == crawl.start_page or depth < self.config.max_depth:
                yield ListingIncomplete(f"{url} could not be read ({exc.message}), so its links were not followed")
            return
        yield document
        self._queue_links(crawl, links, depth)

    def _queue_links(self, crawl: _Crawl, links: list[str], depth: int) -> None:
        if depth < self.config.max_depth:
            for link in links:
                if link not in crawl.seen:
                    crawl.seen.add(link)
                    crawl.queue.append((link, depth + 1))

    def _report_cut_short(self, crawl: _Crawl, max_pages: int) -> Iterator[ListingIncomplete]:
        """Report the listing incomplete when ``KADAPT_MAX_WEB_PAGES`` stopped the crawl with pages left to read."""
        left = sum(1 for url, _ in crawl.queue if crawl.robots.can_fetch(USER_AGENT, url))
        if left and max_pages < self.config.max_pages:
            yield ListingIncomplete(
                f"the crawl stopped at {max_pages:,} pages, the limit KADAPT_MAX_WEB_PAGES sets, with {left:,} "
                "linked pages not read; raise KADAPT_MAX_WEB_PAGES or lower the source's max_pages"
            )

    def _same_host(self, url: str) -> bool:
        parsed = urlparse(url)
        if getattr(self, "_signed_in", False) and parsed.scheme != self._scheme:
            return False  # credentials never go over another scheme (https to http: in clear)
        return parsed.scheme in ("http", "https") and parsed.netloc == self._host

    def _download(self, url: str, headers: dict[str, str] | None = None) -> _Response:
        """GET ``url`` without following redirects, reading at most ``KADAPT_MAX_DOCUMENT_BYTES`` of its body."""
        import httpx

        limit = self.settings.max_document_bytes
        try:
            with self._client.stream("GET", url, headers=headers) as response:
                # a redirect is a 3xx with a Location (httpx's is_redirect is any 3xx, a 304 Not Modified too)
                if response.has_redirect_location or response.status_code >= 400:
                    content = b""  # not read: only the status and the location matter
                else:
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and "content-encoding" not in response.headers:
                        check_size(int(declared), limit, "page")
                    chunks, size = [], 0
                    for chunk in response.iter_bytes():
                        chunks.append(chunk)
                        size += len(chunk)
                        if size > limit:
                            raise DocumentLoadError(
                                f"page is more than {limit:,} bytes, the limit (KADAPT_MAX_DOCUMENT_BYTES); "
                                "stopped reading it"
                            )
                    content = b"".join(chunks)
                return _Response(
                    str(response.url),
                    response.status_code,
                    {key.lower(): value for key, value in response.headers.items()},
                    content,
                    response.has_redirect_location,
                )
        except httpx.HTTPError as exc:
            raise DocumentLoadError(f"could not fetch {url}: {type(exc).__name__}: {exc}") from None
        except ValueError as exc:  # a header httpx cannot send (a server's validator out of ASCII, stored earlier)
            raise DocumentLoadError(f"could not request {url}: {exc}") from None

    def _get(self, url: str, headers: dict[str, str] | None = None) -> _Response:
        """GET ``url``, following redirects on the same host; ``headers`` (a conditional request's) go with the
        first request only: a page that now redirects has changed, whatever the target answers."""
        for _ in range(_MAX_REDIRECTS + 1):
            response = self._download(url, headers)
            if response.is_redirect:
                target = urljoin(url, response.headers.get("location", ""))
                if not self._same_host(target):
                    raise DocumentLoadError(f"redirects to another host or scheme ({target}); not followed")
                url, headers = target, None
                continue
            not_modified = response.status_code == _NOT_MODIFIED and headers is not None
            if response.status_code >= 400 or (300 <= response.status_code < 400 and not not_modified):
                raise _HTTPStatusError(response.status_code, url)  # a 3xx without Location has no page either
            return response
        raise DocumentLoadError(f"more than {_MAX_REDIRECTS} redirects from {url}")

    def _robots(self, start: str) -> RobotFileParser:
        """The site's rules; 404 or 410 means none. Any other failure raises: crawling without knowing the
        rules would read pages the site forbids, and not crawling would look like a site with no pages."""
        parsed = urlparse(start)
        robots_url = f"{parsed.scheme}://{parsed.netloc}/robots.txt"
        parser = RobotFileParser(robots_url)
        try:
            response = self._get(robots_url)
        except _HTTPStatusError as exc:
            if exc.status_code not in _GONE:
                raise
            parser.allow_all = True
            return parser
        parser.parse(response.text.splitlines())
        return parser

    def _sitemap_urls(self, sitemap_url: str) -> tuple[list[str], list[tuple[str, str]]]:
        """The pages the sitemap lists, following the sitemaps a sitemap index lists, and (sitemap, why) for
        each one left out: nested past ``_MAX_SITEMAP_DEPTH``, unreadable, or past ``KADAPT_MAX_SITEMAP_URLS``
        entries in all (every ``<loc>`` counts, so an index of many sitemaps costs no more than one of pages)."""
        from lxml import etree

        limit = self.settings.max_sitemap_urls
        pages: list[str] = []
        left_out: list[tuple[str, str]] = []
        entries = 0
        pending: deque[tuple[str, int]] = deque([(sitemap_url, 0)])
        while pending:
            url, depth = pending.popleft()
            if not self._same_host(url):
                continue
            if depth > _MAX_SITEMAP_DEPTH:
                left_out.append((url, f"sitemap nested more than {_MAX_SITEMAP_DEPTH} levels deep; not read"))
                continue
            if entries >= limit:
                left_out.append(
                    (url, f"not read: the sitemaps listed {limit:,} entries, the limit (KADAPT_MAX_SITEMAP_URLS)")
                )
                continue
            try:
                response = self._get(url)
                root = etree.fromstring(response.content, parser=etree.XMLParser(resolve_entities=False))
            except (DocumentLoadError, etree.XMLSyntaxError) as exc:
                if depth == 0:  # the source's own sitemap: nothing can be listed
                    raise InvalidInput(f"cannot read sitemap {url}: {exc}") from None
                left_out.append((url, f"cannot read sitemap {url}: {exc}"))
                continue
            located = (element.text.strip() for element in root.iter("{*}loc") if element.text)
            locations = list(itertools.islice(located, limit - entries + 1))
            if entries + len(locations) > limit:
                locations = locations[: limit - entries]
                left_out.append(
                    (
                        url,
                        f"sitemap lists more than the {limit:,} entries read in all (KADAPT_MAX_SITEMAP_URLS); "
                        "the rest were not read",
                    )
                )
            entries += len(locations)
            if etree.QName(root).localname == "sitemapindex":
                pending.extend((nested, depth + 1) for nested in locations)
            else:
                pages.extend(_normalize(page) for page in locations if self._same_host(page))
        return pages, left_out

    def _page(self, url: str, response: _Response) -> tuple[Document, list[str]]:
        content_type = response.headers.get("content-type", "text/html")
        suffix = suffix_for_content_type(content_type)
        if suffix is None:
            raise DocumentLoadError(f"unsupported content type {content_type!r}")
        # parsed in a worker process within the time and memory budgets; an HTML page's links come with it
        parsed = parse_document(response.content, url, suffix=suffix, settings=self.settings)
        links: list[str] = []
        for href in parsed.links:
            link = _normalize(urljoin(str(response.url), href))
            if self._same_host(link):
                links.append(link)
        metadata = {"locator": url, "title": parsed.title, "url": url}
        validators = {
            name: response.headers[header]
            for name, header in (("etag", "etag"), ("modified", "last-modified"))
            if _sendable(response.headers.get(header, ""))
        }
        links = list(dict.fromkeys(links))
        # the page's version is what the server says identifies it; a page with more links than are kept is
        # fetched in full at every sync (a 304 must not lose the links that were not kept)
        if validators and len(links) <= _MAX_LINKS_KEPT:
            metadata["version"] = hashlib.sha256(json.dumps(validators, sort_keys=True).encode()).hexdigest()[:32]
            self._pages[url] = validators | {"version": metadata["version"], "links": links}
        return Document(page_content=parsed.text, metadata=metadata), links


def _sendable(value: str) -> bool:
    """Whether a server's validator can be sent back as it came: short, printable ASCII."""
    return bool(value) and len(value) <= _MAX_VALIDATOR and value.isascii() and value.isprintable()


def _conditional_headers(known: dict | None) -> dict[str, str] | None:
    """The headers asking for a page only if it changed since ``known`` (its validators), else None."""
    if known is None:
        return None
    headers = {}
    if isinstance(known.get("etag"), str):
        headers["If-None-Match"] = known["etag"]
    if isinstance(known.get("modified"), str):
        headers["If-Modified-Since"] = known["modified"]
    return headers or None


@hookimpl
def register_connectors(register):
    register(WebConnector)
