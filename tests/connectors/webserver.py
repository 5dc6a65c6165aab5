"""A real HTTP server on 127.0.0.1 serving in-memory pages, for web connector tests."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Site:
    def __init__(self) -> None:
        self.pages: dict[str, tuple[int, str, bytes]] = {}
        self.requests: list[str] = []
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

    def _handler(self):
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                site.requests.append(self.path)
                if self.path == "/drop":  # an unreachable page: the connection closes with no response
                    self.close_connection = True
                    self.connection.close()
                    return
                status, content_type, data = site.pages.get(self.path, (404, "text/plain", b"not found"))
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        return Handler

    def __enter__(self) -> Site:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
