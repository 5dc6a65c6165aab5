"""The ``web`` connector: pages reached from a start URL or listed in a sitemap, on one host.

robots.txt is respected; page and depth limits bound the crawl; loopback and private-range addresses are
refused unless ``KADAPT_ALLOW_PRIVATE_NETWORKS`` is set, when the source is added and at every connection (a
name that resolves to a private address by the time of the fetch gets no request). A response is read as a
stream and dropped once it passes ``KADAPT_MAX_DOCUMENT_BYTES`` (after decompression), so a huge or endless
page costs no more.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urldefrag, urljoin, urlparse
from urllib.robotparser import RobotFileParser

from langchain_core.documents import Document
from pydantic import Field, field_validator, model_validator

from kadapt.connectors import Connector, ConnectorConfig, LoadFailure, Unchanged
from kadapt.errors import DocumentLoadError, InvalidInput
from kadapt.hookspecs import hookimpl
from kadapt.network import check_public_host, public_http_client
from kadapt.parsing import check_size, parse_bytes, suffix_for_content_type

__all__ = ["WebConnector", "check_public_host"]

USER_AGENT = "kadapt-web-connector/0.1 (+https://github.com/kadapt)"
_MAX_REDIRECTS = 5


class WebConfig(ConnectorConfig):
    url: str | None = Field(default=None, description="Start URL; links on the same host are followed.")
    sitemap: str | None = Field(default=None, description="Sitemap URL; the pages it lists are read.")
    max_pages: int = Field(default=100, ge=1, description="Stop after this many pages.")
    max_depth: int = Field(default=3, ge=0, description="Follow links at most this many hops from the start URL.")
    timeout: float = Field(default=10.0, gt=0, description="Seconds to wait for each page.")

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


class WebConnector(Connector):
    kind = "web"
    Config = WebConfig
    description = "Web pages from a start URL or a sitemap, on one host, respecting robots.txt."
    config: WebConfig

    def check(self) -> None:
        start = self.config.url or self.config.sitemap
        assert start is not None
        check_public_host(start, allow_private=self.settings.allow_private_networks)

    def load(self) -> Iterator[Document | Unchanged | LoadFailure]:
        self.check()
        start = self.config.url or self.config.sitemap
        assert start is not None
        self._host = urlparse(start).netloc
        max_pages = min(self.config.max_pages, self.settings.max_web_pages)
        with public_http_client(
            allow_private=self.settings.allow_private_networks,
            timeout=self.config.timeout,
            headers={"User-Agent": USER_AGENT},
        ) as client:
            self._client = client
            robots = self._robots(start)
            queue: deque[tuple[str, int]] = deque()
            if self.config.sitemap:
                for page in self._sitemap_urls(self.config.sitemap):
                    queue.append((page, self.config.max_depth))
            if self.config.url:
                queue.append((_normalize(self.config.url), 0))
            seen = {url for url, _ in queue}
            pages = 0
            while queue and pages < max_pages:
                url, depth = queue.popleft()
                if not robots.can_fetch(USER_AGENT, url):
                    continue
                pages += 1
                try:
                    document, links = self._fetch_page(url)
                except DocumentLoadError as exc:
                    yield LoadFailure(url, exc.message)
                    continue
                yield document
                if depth < self.config.max_depth:
                    for link in links:
                        if link not in seen:
                            seen.add(link)
                            queue.append((link, depth + 1))

    def _same_host(self, url: str) -> bool:
        parsed = urlparse(url)
        return parsed.scheme in ("http", "https") and parsed.netloc == self._host

    def _download(self, url: str) -> _Response:
        """GET ``url`` without following redirects, reading at most ``KADAPT_MAX_DOCUMENT_BYTES`` of its body."""
        import httpx

        limit = self.settings.max_document_bytes
        try:
            with self._client.stream("GET", url) as response:
                if response.is_redirect or response.status_code >= 400:
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
                    response.is_redirect,
                )
        except httpx.HTTPError as exc:
            raise DocumentLoadError(f"could not fetch {url}: {type(exc).__name__}: {exc}") from None

    def _get(self, url: str) -> _Response:
        for _ in range(_MAX_REDIRECTS + 1):
            response = self._download(url)
            if response.is_redirect:
                target = urljoin(url, response.headers.get("location", ""))
                if not self._same_host(target):
                    raise DocumentLoadError(f"redirects to another host ({target}); not followed")
                url = target
                continue
            if response.status_code >= 400:
                raise DocumentLoadError(f"HTTP {response.status_code} from {url}")
            return response
        raise DocumentLoadError(f"more than {_MAX_REDIRECTS} redirects from {url}")

    def _robots(self, start: str) -> RobotFileParser:
        parsed = urlparse(start)
        robots_url = f"{parsed.scheme}://{parsed.netloc}/robots.txt"
        parser = RobotFileParser(robots_url)
        try:
            response = self._download(robots_url)
        except Exception:
            parser.parse([])  # unreachable (or oversized) robots.txt: treated as no rules, like most crawlers
            return parser
        if response.status_code in (401, 403):
            parser.disallow_all = True
        elif response.status_code >= 400:
            parser.allow_all = True
        else:
            parser.parse(response.text.splitlines())
        return parser

    def _sitemap_urls(self, sitemap_url: str, depth: int = 0) -> list[str]:
        from lxml import etree

        if not self._same_host(sitemap_url) or depth > 2:
            return []
        try:
            response = self._get(sitemap_url)
            root = etree.fromstring(response.content, parser=etree.XMLParser(resolve_entities=False))
        except (DocumentLoadError, etree.XMLSyntaxError) as exc:
            raise InvalidInput(f"cannot read sitemap {sitemap_url}: {exc}") from None
        locations = [element.text.strip() for element in root.iter("{*}loc") if element.text]
        if etree.QName(root).localname == "sitemapindex":
            return [url for nested in locations for url in self._sitemap_urls(nested, depth + 1)]
        return [_normalize(url) for url in locations if self._same_host(url)]

    def _fetch_page(self, url: str) -> tuple[Document, list[str]]:
        response = self._get(url)
        content_type = response.headers.get("content-type", "text/html")
        suffix = suffix_for_content_type(content_type)
        if suffix is None:
            raise DocumentLoadError(f"unsupported content type {content_type!r}")
        parsed = parse_bytes(response.content, url, suffix=suffix, max_bytes=self.settings.max_document_bytes)
        links: list[str] = []
        if suffix == ".html":
            from bs4 import BeautifulSoup

            soup = BeautifulSoup(response.content, "lxml")
            for anchor in soup.find_all("a", href=True):
                link = _normalize(urljoin(str(response.url), anchor["href"]))
                if self._same_host(link):
                    links.append(link)
        metadata = {"locator": url, "title": parsed.title, "url": url}
        return Document(page_content=parsed.text, metadata=metadata), links


@hookimpl
def register_connectors(register):
    register(WebConnector)
