"""Microsoft Graph on 127.0.0.1 for the sharepoint connector's tests: an OAuth token endpoint (client
credentials) and the documented JSON of ``/sites/{host}:/{path}``, ``/sites/{id}/drive(s)``,
``/drives/{id}/root/delta`` (pages of ``value`` with ``@odata.nextLink``, ending in ``@odata.deltaLink``; items
with ``parentReference.id`` but no path, deletions as a ``deleted`` facet) and ``/items/{id}/content`` (a 302 to a
pre-authenticated download URL), served from one in-memory drive. It logs every request and can expire the
access tokens (401 InvalidAuthenticationToken), the delta links (410 resyncRequired), throttle (429 with
Retry-After) or go down (503)."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

from tests.connectors.apiserver import ApiHandler

SITE_ID = "contoso.sharepoint.com,5a1b,9c2d"
DRIVE_ID = "b!hr-documents"


class Graph:
    def __init__(self, client_id: str, client_secret: str, page_size: int = 2) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.page_size = page_size
        self.seq = 0
        self.items: dict[str, dict] = {"root": {"id": "root", "name": "root", "root": {}, "folder": {}, "seq": 0}}
        self.contents: dict[str, bytes] = {}
        self.log: list[tuple[str, str, int]] = []  # (method, path with query, status)
        self.download_headers: list[dict[str, str]] = []
        self.tokens: set[str] = set()
        self.issued = 0
        self.oldest_delta = 0  # delta links with an older token answer 410
        self.throttle = 0  # answer this many next API requests with 429 Retry-After: 1
        self.expire_after: int | None = None  # every access token expires after this many more API requests
        self.down = False
        self._ids = iter(range(1, 10**9))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    # the drive

    def _touch(self, item: dict) -> None:
        self.seq += 1
        item["seq"] = self.seq

    def folder(self, name: str, parent: str = "root") -> str:
        item_id = f"F{next(self._ids)}"
        self.items[item_id] = {"id": item_id, "name": name, "folder": {"childCount": 0}, "parent": parent}
        self._touch(self.items[item_id])
        return item_id

    def put(self, name: str, data: bytes, parent: str = "root", item_id: str | None = None) -> str:
        item_id = item_id or f"I{next(self._ids)}"
        version = self.items.get(item_id, {}).get("version", 0) + 1
        self.items[item_id] = {"id": item_id, "name": name, "file": {}, "parent": parent, "version": version}
        self.contents[item_id] = data
        self._touch(self.items[item_id])
        return item_id

    def move(self, item_id: str, parent: str) -> None:  # a move reports only the moved item, as Graph's delta does
        self.items[item_id]["parent"] = parent
        self._touch(self.items[item_id])

    def delete(self, item_id: str) -> None:
        self.items[item_id] = {"id": item_id, "deleted": {"state": "deleted"}}
        self._touch(self.items[item_id])

    def downloads(self) -> list[str]:
        return sorted(path.split("/")[2].split("?")[0] for method, path, status in self.log if path.startswith("/dl/"))

    # the API

    def _item_json(self, item: dict) -> dict:
        if "deleted" in item:
            return {"id": item["id"], "deleted": item["deleted"], "parentReference": {"driveId": DRIVE_ID}}
        body = {
            "id": item["id"],
            "name": item["name"],
            "parentReference": {"driveId": DRIVE_ID, "id": item.get("parent")},
        }
        for facet in ("root", "folder"):
            if facet in item:
                body[facet] = item[facet]
        if "file" in item:
            data = self.contents[item["id"]]
            tag = f"{item['id']},{item['version']}"
            body |= {"file": {"mimeType": "application/octet-stream"}, "size": len(data)}
            body |= {
                "cTag": f'"c:{{{tag}}}"',
                "eTag": f'"{{{tag}}}"',
                "webUrl": f"https://contoso.sharepoint.com/d/{item['id']}",
            }
        return body

    def _delta(self, query: dict) -> tuple[int, dict]:
        token = int(query.get("token", ["0"])[0])
        skip = int(query.get("skip", ["0"])[0])
        if token and token < self.oldest_delta:
            return 410, {"error": {"code": "resyncRequired", "message": "Resync required."}}
        changed = [
            item for item in self.items.values() if item.get("seq", 0) > token or (not token and "deleted" not in item)
        ]
        if not token:
            changed = [item for item in changed if "deleted" not in item]
        changed.sort(key=lambda item: item.get("seq", 0))
        page = changed[skip : skip + self.page_size]
        body: dict = {"value": [self._item_json(item) for item in page]}
        link = f"{self.base}/v1.0/drives/{DRIVE_ID}/root/delta"
        if skip + self.page_size < len(changed):
            body["@odata.nextLink"] = f"{link}?token={token}&skip={skip + self.page_size}"
        else:
            body["@odata.deltaLink"] = f"{link}?token={self.seq}"
        return 200, body

    def _by_path(self, path: str) -> dict | None:
        current = "root"
        for name in [part for part in path.split("/") if part]:
            found = [i for i in self.items.values() if i.get("parent") == current and i.get("name") == name]
            if not found:
                return None
            current = found[0]["id"]
        return self.items[current]

    def answer(self, method: str, path: str, query: dict, form: dict) -> tuple[int, dict | bytes, dict]:
        if method == "POST" and path == "/token":
            if form.get("client_id") != [self.client_id] or form.get("client_secret") != [self.client_secret]:
                return (
                    401,
                    {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret."},
                    {},
                )
            self.issued += 1
            token = f"graph-token-{self.issued}"
            self.tokens.add(token)
            return 200, {"token_type": "Bearer", "expires_in": 3599, "access_token": token}, {}
        if path.startswith("/dl/"):
            return 200, self.contents.get(path.split("/")[2], b""), {}
        api = unquote(path).removeprefix("/v1.0")
        if api == "/sites/contoso.sharepoint.com:/sites/HR":
            return 200, {"id": SITE_ID, "name": "HR", "webUrl": "https://contoso.sharepoint.com/sites/HR"}, {}
        if api == f"/sites/{SITE_ID}/drive":
            return 200, {"id": DRIVE_ID, "name": "Documents", "driveType": "documentLibrary"}, {}
        if api == f"/sites/{SITE_ID}/drives":
            return 200, {"value": [{"id": DRIVE_ID, "name": "Documents"}, {"id": "b!other", "name": "Archive"}]}, {}
        if api == f"/drives/{DRIVE_ID}/root/delta":
            status, body = self._delta(query)
            return status, body, {}
        if api.startswith(f"/drives/{DRIVE_ID}/root:/"):
            item = self._by_path(api.removeprefix(f"/drives/{DRIVE_ID}/root:/"))
            return (200, self._item_json(item), {}) if item else (404, {"error": {"code": "itemNotFound"}}, {})
        if api.startswith(f"/drives/{DRIVE_ID}/items/") and api.endswith("/content"):
            item_id = api.split("/")[4]
            if item_id in self.contents:
                return 302, b"", {"Location": f"{self.base}/dl/{item_id}?tempauth=signed"}
        return 404, {"error": {"code": "itemNotFound", "message": "The resource could not be found."}}, {}

    def _handler(self):
        graph = self

        class Handler(ApiHandler):
            def _serve(self, method: str) -> None:
                parsed = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode()) if length else {}
                if parsed.path.startswith("/dl/"):
                    graph.download_headers.append(dict(self.headers.items()))
                if graph.down:
                    return self._send(method, 503, {"error": {"code": "serviceNotAvailable"}}, {"Retry-After": "0"})
                api = parsed.path.startswith("/v1.0/")
                if graph.throttle and api:
                    graph.throttle -= 1
                    return self._send(method, 429, {"error": {"code": "activityLimitReached"}}, {"Retry-After": "1"})
                bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
                if api and graph.expire_after is not None:
                    if graph.expire_after == 0:
                        graph.tokens.clear()
                        graph.expire_after = None
                    else:
                        graph.expire_after -= 1
                if api and bearer not in graph.tokens:
                    error = {"error": {"code": "InvalidAuthenticationToken", "message": "Access token has expired."}}
                    return self._send(method, 401, error, {})
                status, body, headers = graph.answer(method, parsed.path, parse_qs(parsed.query), form)
                self._send(method, status, body, headers)

            def do_GET(self):  # noqa: N802 - http.server's naming
                self._serve("GET")

            def do_POST(self):  # noqa: N802
                self._serve("POST")

            def _send(self, method, status, body, headers):
                graph.log.append((method, self.path, status))
                self.reply(status, body, headers)

        return Handler

    def __enter__(self) -> Graph:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
