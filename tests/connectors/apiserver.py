"""What the local vendor API servers of the connector tests share: an http.server handler that answers with JSON
(or bytes) and says nothing on stderr."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler


class ApiHandler(BaseHTTPRequestHandler):
    def reply(self, status: int, body: dict | bytes, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if isinstance(body, bytes) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass
