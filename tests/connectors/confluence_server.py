"""A Confluence REST API on 127.0.0.1 for the confluence connector's tests: the documented JSON shapes of
Confluence Cloud's v1 content API (``/wiki/rest/api/content`` listings with ``results``, ``start``, ``limit``,
``size`` and ``_links.next``; a page with ``body.storage``; attachments with ``extensions.fileSize`` and
``_links.download``), served from in-memory spaces. It logs every request, and can answer 429 with Retry-After,
503 for an outage, and 401 once the token has expired."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

from tests.connectors.apiserver import ApiHandler

CONTEXT = "/wiki"  # Cloud's context path: the site is https://<site>.atlassian.net/wiki


@dataclass
class Page:
    id: str
    space: str
    title: str
    body: str  # storage format (XHTML)
    parent: str | None = None
    version: int = 1
    attachments: dict[str, tuple[str, bytes, int]] = field(default_factory=dict)  # id -> (name, data, version)
    read_groups: list[str] = field(default_factory=list)  # the page's own view restriction: groups
    read_users: list[str] = field(default_factory=list)  # and users (account ids)


class Confluence:
    def __init__(self, token: str, page_size: int = 2) -> None:
        self.token = token
        self.page_size = page_size  # the server's own cap on `limit`, small so that every listing has pages
        self.pages: dict[str, Page] = {}
        self.log: list[tuple[str, int]] = []  # (path with query, status)
        self.throttle = 0  # answer this many next requests with 429 Retry-After: 1
        self.down = False  # every request answers 503
        self.expired = False  # the token is refused (401)
        self._ids = iter(range(1000, 10**9))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def site(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{CONTEXT}"

    def add_page(self, space: str, title: str, body: str, parent: str | None = None) -> Page:
        page = Page(str(next(self._ids)), space, title, body, parent)
        self.pages[page.id] = page
        return page

    def edit(self, page: Page, body: str) -> None:
        page.body = body
        page.version += 1

    def attach(self, page: Page, name: str, data: bytes) -> str:
        attachment_id = f"att{next(self._ids)}"
        page.attachments[attachment_id] = (name, data, 1)
        return attachment_id

    def reads(self) -> list[str]:
        """The content read in full: page bodies (expand=body.storage) and attachment downloads."""
        read = []
        for path, status in self.log:
            parsed = urlparse(path)
            body = "body.storage" in parse_qs(parsed.query).get("expand", [""])[0]
            if status == 200 and (body or parsed.path.startswith(f"{CONTEXT}/download/attachments/")):
                read.append(parsed.path.rsplit("/", 1)[-1])
        return sorted(read)

    # the API

    def _descendants(self, page_id: str) -> list[Page]:
        children = [page for page in self.pages.values() if page.parent == page_id]
        return [item for child in children for item in (child, *self._descendants(child.id))]

    def _page_json(self, page: Page, expand: str) -> dict:
        body = {
            "id": page.id,
            "type": "page",
            "status": "current",
            "title": page.title,
            "space": {"key": page.space},
            "version": {"number": page.version, "when": "2026-11-30T09:00:00.000Z"},
            "_links": {
                "webui": f"/spaces/{page.space}/pages/{page.id}",
                "self": f"{self.site}/rest/api/content/{page.id}",
            },
        }
        if "body.storage" in expand:
            body["body"] = {"storage": {"value": page.body, "representation": "storage"}}
        if "ancestors" in expand:
            chain, parent = [], page.parent
            while parent is not None:
                chain.insert(0, {"id": parent, "type": "page", "title": self.pages[parent].title})
                parent = self.pages[parent].parent
            body["ancestors"] = chain
        if "restrictions.read" in expand:
            groups = [{"type": "group", "name": name} for name in page.read_groups]
            users = [{"type": "known", "accountId": account} for account in page.read_users]
            restrictions = {"group": {"results": groups, "size": len(groups)}, "user": {"results": users}}
            body["restrictions"] = {"read": {"operation": "read", "restrictions": restrictions}}
        return body

    def _listing(self, path: str, query: dict, items: list[dict]) -> dict:
        start = int(query.get("start", ["0"])[0])
        limit = min(int(query.get("limit", ["25"])[0]), self.page_size)
        results = items[start : start + limit]
        links = {"base": self.site, "context": CONTEXT, "self": f"{self.site}{path.removeprefix(CONTEXT)}"}
        if start + limit < len(items):
            following = {key: values[0] for key, values in query.items()} | {"start": start + limit, "limit": limit}
            links["next"] = f"{path.removeprefix(CONTEXT)}?{urlencode(following)}"  # relative to the base, as Cloud's
        return {"results": results, "start": start, "limit": limit, "size": len(results), "_links": links}

    def _attachment_json(self, page: Page, attachment_id: str) -> dict:
        name, data, version = page.attachments[attachment_id]
        return {
            "id": attachment_id,
            "type": "attachment",
            "title": name,
            "version": {"number": version},
            "extensions": {"fileSize": len(data), "mediaType": "application/octet-stream"},
            "_links": {"download": f"/download/attachments/{page.id}/{name}?version={version}&api=v2"},
        }

    def answer(self, path: str, query: dict) -> tuple[int, dict | bytes]:
        api = path.removeprefix(CONTEXT)
        parts = api.strip("/").split("/")
        expand = query.get("expand", [""])[0]
        if api == "/rest/api/content":
            space = query.get("spaceKey", [""])[0]
            if not any(page.space == space for page in self.pages.values()):
                return 404, {"statusCode": 404, "message": f"No space with key : {space}"}
            pages = [self._page_json(p, expand) for p in self.pages.values() if p.space == space]
            return 200, self._listing(path, query, pages)
        if parts[:3] == ["rest", "api", "content"] and len(parts) >= 4:
            page = self.pages.get(parts[3])
            if page is None:
                return 404, {"statusCode": 404, "message": "No content found with id"}
            if len(parts) == 4:
                return 200, self._page_json(page, expand)
            if parts[4:] == ["descendant", "page"]:
                return 200, self._listing(path, query, [self._page_json(p, expand) for p in self._descendants(page.id)])
            if parts[4:] == ["child", "attachment"]:
                items = [self._attachment_json(page, attachment) for attachment in page.attachments]
                return 200, self._listing(path, query, items)
        if parts[:2] == ["download", "attachments"] and len(parts) == 4:
            page = self.pages.get(parts[2])
            for name, data, _ in page.attachments.values() if page else []:
                if name == parts[3]:
                    return 200, data
        return 404, {"statusCode": 404, "message": "not found"}

    def _handler(self):
        confluence = self

        class Handler(ApiHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                parsed = urlparse(self.path)
                if confluence.down:
                    self._send(503, {"message": "Service Unavailable"}, {"Retry-After": "0"})
                elif confluence.throttle:
                    confluence.throttle -= 1
                    self._send(429, {"message": "Rate limit exceeded"}, {"Retry-After": "1"})
                elif confluence.expired or self.headers.get("Authorization") != f"Bearer {confluence.token}":
                    self._send(401, {"statusCode": 401, "message": "Unauthorized; scope does not match"})
                else:
                    status, body = confluence.answer(parsed.path, parse_qs(parsed.query))
                    self._send(status, body)

            def _send(self, status, body, headers=None):
                confluence.log.append((self.path, status))
                self.reply(status, body, headers)

        return Handler

    def __enter__(self) -> Confluence:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
