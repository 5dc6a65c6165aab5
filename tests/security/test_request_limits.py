"""Request bodies over KADAPT_MAX_REQUEST_BYTES get 413, announced (Content-Length) or streamed (chunked), before
the server has read them. Checked over raw sockets against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import json
import selectors
import socket
import threading
import time
from collections.abc import Iterator

import pytest

LIMIT = 200_000


@pytest.fixture(scope="module")
def server(env) -> Iterator[tuple[str, int]]:
    import uvicorn

    from tests.conftest import free_port

    port = free_port()
    config = uvicorn.Config(env.app(max_request_bytes=LIMIT), host="127.0.0.1", port=port, log_level="warning")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not running.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield "127.0.0.1", port
    finally:
        running.should_exit = True
        thread.join(timeout=30)


def _head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _answered(sock: socket.socket, wait: float) -> bool:
    # a selector, not select(): late in a long test run the socket's descriptor can be over FD_SETSIZE (1024)
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        return bool(selector.select(wait))


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    sock.settimeout(30)
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


def _assert_names_the_limit(body: bytes) -> None:
    error = json.loads(body)["error"]
    assert error["code"] == "request_too_large"
    assert f"{LIMIT:,} bytes" in error["message"] and "KADAPT_MAX_REQUEST_BYTES" in error["message"]


def test_an_announced_body_over_the_limit_is_refused_before_it_is_sent(env, server):
    headers = env.headers("admin") | {"Content-Type": "application/json", "Content-Length": str(50 * LIMIT)}
    with socket.create_connection(server) as sock:
        sock.sendall(_head("POST", "/v1/kbs", headers) + b'{"slug": "too-big", "title": "')
        assert _answered(sock, 10), "the server waited for a body it should have refused"
        status, response_headers, body = _read_response(sock)
    assert status == 413
    _assert_names_the_limit(body)
    assert response_headers["x-content-type-options"] == "nosniff"
    from kadapt.kbs import list_kbs

    assert "too-big" not in [kb.slug for kb in list_kbs(env.catalog)]  # the route never ran


def test_a_streamed_body_is_refused_once_it_passes_the_limit(env, server):
    headers = env.headers("admin") | {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    piece = b" " * 50_000
    sent = 0
    with socket.create_connection(server) as sock:
        sock.sendall(_head("POST", "/v1/kbs", headers))
        for _ in range(200):  # 10 MB if the server read it all
            try:
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
            if _answered(sock, 0.05):
                break
        status, _, body = _read_response(sock)
    assert status == 413
    _assert_names_the_limit(body)
    assert sent < 20 * LIMIT  # refused long before the whole body was sent


def test_bodies_within_the_limit_and_console_forms_over_it(env, server):
    import httpx

    url = f"http://{server[0]}:{server[1]}"
    created = httpx.post(url + "/v1/kbs", headers=env.headers("admin"), json={"slug": "small-enough"}, timeout=60)
    assert created.status_code == 201, created.text
    chat = {"model": "small-enough", "messages": [{"role": "user", "content": "x" * (2 * LIMIT)}]}
    refused = httpx.post(url + "/v1/chat/completions", headers=env.headers("admin"), json=chat, timeout=60)
    assert refused.status_code == 413
    _assert_names_the_limit(refused.content)
    form = httpx.post(url + "/ui/login", data={"api_key": "x" * (2 * LIMIT)}, timeout=60)
    assert form.status_code == 413
