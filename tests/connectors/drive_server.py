"""The Google Drive API v3 on 127.0.0.1 for the gdrive connector's tests: an OAuth token endpoint that checks the
service account's signed JWT (RFC 7523, verified with the account's public key), and the documented JSON of
``files.list`` (``q="'<id>' in parents"``, ``nextPageToken``), ``files.get?alt=media``, ``files.export``,
``changes.getStartPageToken`` and ``changes.list`` (``changes`` with ``fileId``, ``removed`` and ``file``;
``nextPageToken`` then ``newStartPageToken``), served from one in-memory drive. It logs every request."""

from __future__ import annotations

import re
import threading
import time
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from tests.connectors.apiserver import ApiHandler

FOLDER = "application/vnd.google-apps.folder"
DOC = "application/vnd.google-apps.document"
SHEET = "application/vnd.google-apps.spreadsheet"


class Drive:
    def __init__(self, account: str, public_key: bytes, page_size: int = 2) -> None:
        self.account, self.public_key = account, public_key
        self.page_size = page_size
        self.files: dict[str, dict] = {}
        self.contents: dict[str, bytes] = {}
        self.changes: list[str] = []  # file ids, in the order they changed; a token is a position in it
        self.log: list[tuple[str, str, int]] = []
        self.tokens: set[str] = set()
        self.throttle = 0
        self.expire_after: int | None = None  # every access token expires after this many more API requests
        self.removed: set[str] = set()  # deleted for good: changes say removed, with no file
        self._ids = iter(range(1, 10**9))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, name: str, parent: str, mime: str, data: bytes = b"", file_id: str | None = None) -> str:
        file_id = file_id or f"f{next(self._ids):04d}x"
        version = int(self.files.get(file_id, {}).get("version", "0")) + 1
        self.files[file_id] = {
            "id": file_id,
            "name": name,
            "mimeType": mime,
            "parents": [parent],
            "version": str(version),
        }
        self.contents[file_id] = data
        self.changes.append(file_id)
        return file_id

    def move(self, file_id: str, parent: str) -> None:
        self.files[file_id]["parents"] = [parent]
        self.files[file_id]["version"] = str(int(self.files[file_id]["version"]) + 1)
        self.changes.append(file_id)

    def remove(self, file_id: str) -> None:
        del self.files[file_id]
        self.removed.add(file_id)
        self.changes.append(file_id)

    def trash(self, file_id: str) -> None:
        self.files[file_id]["trashed"] = True
        self.changes.append(file_id)

    def reads(self) -> list[str]:
        """The files whose content was downloaded or exported."""
        found = set()
        for _, path, status in self.log:
            match = re.match(r"/drive/v3/files/([^/?]+)", path)
            if status == 200 and match and ("alt=media" in path or "/export" in path):
                found.add(match.group(1))
        return sorted(found)

    def _resource(self, file: dict) -> dict:
        body = {key: value for key, value in file.items()}
        if file["mimeType"] not in (FOLDER, DOC, SHEET):
            body["size"] = str(len(self.contents[file["id"]]))
        body["webViewLink"] = f"https://drive.google.com/file/d/{file['id']}/view"
        return body

    def _page(self, items: list, query: dict) -> tuple[list, str | None]:
        start = int(query.get("pageToken", ["0"])[0])
        return items[start : start + self.page_size], (
            str(start + self.page_size) if start + self.page_size < len(items) else None
        )

    def answer(self, path: str, query: dict, form: dict) -> tuple[int, dict | bytes]:
        if path == "/token":
            return self._token(form)
        if path == "/drive/v3/changes/startPageToken":
            return 200, {"kind": "drive#startPageToken", "startPageToken": str(len(self.changes))}
        if path == "/drive/v3/changes":
            start = int(query["pageToken"][0])
            ids = self.changes[start:]
            page = ids[: self.page_size]
            changes = [self._change(file_id) for file_id in page]
            if len(ids) > self.page_size:
                return 200, {"changes": changes, "nextPageToken": str(start + self.page_size)}
            return 200, {"changes": changes, "newStartPageToken": str(len(self.changes))}
        if path == "/drive/v3/files":
            parent = re.fullmatch(r"'([^']+)' in parents and trashed=false", query["q"][0]).group(1)
            items = [self._resource(f) for f in self.files.values() if parent in f["parents"] and not f.get("trashed")]
            page, following = self._page(items, query)
            return 200, {"files": page} | ({"nextPageToken": following} if following else {})
        match = re.fullmatch(r"/drive/v3/files/([^/]+)(/export)?", path)
        if match and match.group(1) in self.files:
            file = self.files[match.group(1)]
            if match.group(2):
                wanted = query["mimeType"][0]
                if file["mimeType"] not in (DOC, SHEET):
                    return 403, {"error": {"code": 403, "message": "Export only supports Docs Editors files."}}
                return 200, self.contents[file["id"]] if wanted in ("text/plain", "text/csv") else b""
            if query.get("alt") == ["media"]:
                return 200, self.contents[file["id"]]
        return 404, {"error": {"code": 404, "message": "File not found.", "errors": [{"reason": "notFound"}]}}

    def _change(self, file_id: str) -> dict:
        if file_id in self.removed:
            return {"kind": "drive#change", "fileId": file_id, "removed": True}
        file = self.files[file_id]
        return {"kind": "drive#change", "fileId": file_id, "removed": False, "file": self._resource(file)}

    def _token(self, form: dict) -> tuple[int, dict]:
        import google.auth.jwt

        try:
            # google-auth names Google's own token endpoint as the audience, whichever token_uri it posts to
            claims = google.auth.jwt.decode(
                form["assertion"][0], certs=self.public_key, audience="https://oauth2.googleapis.com/token"
            )
        except Exception as exc:  # a bad signature, audience or expiry
            return 400, {"error": "invalid_grant", "error_description": f"Invalid JWT: {type(exc).__name__}"}
        if (
            form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
            or claims.get("iss") != self.account
        ):
            return 400, {"error": "invalid_grant"}
        token = f"ya29.drive-{len(self.tokens) + 1}-{int(time.time())}"
        self.tokens.add(token)
        return 200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}

    def _handler(self):
        drive = self

        class Handler(ApiHandler):
            def _serve(self):
                parsed = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode()) if length else {}
                api = parsed.path.startswith("/drive/")
                if api and drive.throttle:
                    drive.throttle -= 1
                    return self._send(
                        429, {"error": {"code": 429, "message": "Rate Limit Exceeded"}}, {"Retry-After": "1"}
                    )
                if api and drive.expire_after is not None:
                    if drive.expire_after == 0:
                        drive.tokens.clear()
                        drive.expire_after = None
                    else:
                        drive.expire_after -= 1
                if api and self.headers.get("Authorization", "").removeprefix("Bearer ") not in drive.tokens:
                    return self._send(401, {"error": {"code": 401, "message": "Invalid Credentials"}}, {})
                status, body = drive.answer(parsed.path, parse_qs(parsed.query), form)
                self._send(status, body, {})

            do_GET = do_POST = _serve  # noqa: N815 - http.server's naming

            def _send(self, status, body, headers):
                drive.log.append((self.command, self.path, status))
                self.reply(status, body, headers)

        return Handler

    def __enter__(self) -> Drive:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
