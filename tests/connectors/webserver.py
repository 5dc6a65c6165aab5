"""A real HTTP server on 127.0.0.1 serving in-memory pages, for web connector tests."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Site:
    def __init__(self) -> None:
        self.pages: dict[str, tuple[int, str, bytes]] = {}
        self.requests: list[str] = []
        self.answers: list[tuple[str, int]] = []  # (path, status) of each page answered, 304s included
        self.required: dict[str, str] = {}  # headers every request must carry (else 401), e.g. Authorization
        self.seen_headers: list[dict[str, str]] = []  # each request's headers
        self.etags = False  # pages carry an ETag (their content's hash) and answer If-None-Match with 304
        self.etag_text: str | None = None  # the ETag every page sends instead (e.g. one out of ASCII)
        self.endless_path: str | None = None
        self.redirects: dict[str, str] = {}  # path -> Location of a 302
        self.endless_sent = 0  # bytes of the endless page written before the reader hung up
        self.endless_done = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def html(self, path: str, title: str, body: str, status: int = 200) -> None:
        page = f"<!doctype html><html><head><title>{title}</title></head><body>{body}</body></html>"
        self.pages[path] = (status, "text/html; charset=utf-8", page.encode())

    def raw(self, path: str, content_type: str, data: bytes, status: int = 200) -> None:
        self.pages[path] = (status, content_type, data)

    def redirect(self, path: str, location: str) -> None:
        self.redirects[path] = location

    def endless(self, path: str) -> None:
        """A page without Content-Length whose body goes on (up to 500 MB) until the reader hangs up."""
        self.endless_path = path

    def _handler(self):
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                site.requests.append(self.path)
                site.seen_headers.append(dict(self.headers.items()))
                if any(self.headers.get(name) != value for name, value in site.required.items()):
                    site.answers.append((self.path, 401))
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="intranet"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path == site.endless_path:
                    self._endless()
                    return
                if self.path in site.redirects:
                    self.send_response(302)
                    self.send_header("Location", site.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path == "/drop":  # an unreachable page: the connection closes with no response
                    self.close_connection = True
                    self.connection.close()
                    return
                status, content_type, data = site.pages.get(self.path, (404, "text/plain", b"not found"))
                etag = site.etag_text or f'"{hashlib.sha256(data).hexdigest()[:16]}"'
                if site.etags and status == 200 and self.headers.get("If-None-Match") == etag:
                    site.answers.append((self.path, 304))
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                site.answers.append((self.path, status))
                self.send_response(status)
                if site.etags and status == 200:
                    self.send_header("ETag", etag)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _endless(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()  # no Content-Length: the body lasts until the connection closes
                chunk = b"<p>" + b"y" * 65_536 + b"</p>"
                try:
                    while site.endless_sent < 500_000_000:
                        self.wfile.write(chunk)
                        site.endless_sent += len(chunk)
                except OSError:  # the reader hung up
                    pass
                finally:
                    site.endless_done.set()

            def log_message(self, *args):
                pass

        return Handler

    def __enter__(self) -> Site:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
