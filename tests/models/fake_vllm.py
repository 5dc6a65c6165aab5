"""A stand-in for a vLLM server with ``--enable-lora`` on 127.0.0.1 (vLLM needs a GPU; these machines have none).

It speaks the parts of vLLM's HTTP API kadapt uses — ``/v1/chat/completions`` (plain and streamed),
``/v1/models``, ``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` — with vLLM's rules: a model is the
base model or a loaded adapter (else 404), an adapter loads only from a folder holding ``adapter_config.json``
and ``adapter_model.safetensors``, a loaded name is refused again unless ``load_inplace`` (or, as ``legacy``
servers do, at all), and the runtime routes exist only with ``runtime_loading``. Every request is recorded.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeVLLM:
    base_model: str
    runtime_loading: bool = True
    legacy: bool = False  # a vLLM without load_inplace: a loaded name must be unloaded first
    requests: list[Request] = field(default_factory=list)
    adapters: dict[str, str] = field(default_factory=dict)  # name -> path

    def __post_init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeVLLM:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def calls(self, path: str) -> list[Request]:
        return [request for request in self.requests if request.path == path]

    @staticmethod
    def answer(model: str) -> str:
        return f"An answer from {model}."

    # -- the routes: (status, JSON body or text, or a list of SSE events) ------------------------------------

    def handle(self, request: Request) -> tuple[int, Any]:
        self.requests.append(request)
        if request.method == "GET" and request.path == "/v1/models":
            names = [self.base_model, *self.adapters]
            return 200, {"object": "list", "data": [{"id": name, "object": "model"} for name in names]}
        if request.path == "/v1/chat/completions":
            return self._chat(request.body)
        if request.path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter") and self.runtime_loading:
            return self._load(request.body) if request.path.startswith("/v1/load") else self._unload(request.body)
        return 404, {"detail": "Not Found"}

    def _error(self, status: int, message: str, kind: str) -> tuple[int, Any]:
        return status, {"error": {"message": message, "type": kind, "param": None, "code": status}}

    def _load(self, body: dict) -> tuple[int, Any]:
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return self._error(400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput")
        if name in self.adapters and (self.legacy or not body.get("load_inplace")):
            return self._error(400, f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput")
        folder = Path(path)
        if not (folder / "adapter_config.json").is_file() or not (folder / "adapter_model.safetensors").is_file():
            return self._error(404, f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError")
        self.adapters[name] = path
        return 200, f"Success: LoRA adapter '{name}' added successfully."

    def _unload(self, body: dict) -> tuple[int, Any]:
        name = body.get("lora_name")
        if name not in self.adapters:
            return self._error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
        del self.adapters[name]
        return 200, f"Success: LoRA adapter '{name}' removed successfully."

    def _chat(self, body: dict) -> tuple[int, Any]:
        model = body.get("model")
        if model != self.base_model and model not in self.adapters:
            return self._error(404, f"The model `{model}` does not exist.", "NotFoundError")
        text, created = self.answer(model), int(time.time())
        usage = {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}
        if not body.get("stream"):
            message = {"role": "assistant", "content": text}
            return 200, {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": usage,
            }

        def chunk(delta: dict, finish: str | None = None) -> dict:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [choice]}  # fmt: skip

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": piece}) for piece in re.findall(r"\S+\s*", text)]
        events.append(chunk({}, "stop"))
        events.append({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": [], "usage": usage})  # fmt: skip
        return 200, events


def _handler(fake: FakeVLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep the test output clean
            pass

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            status, payload = fake.handle(Request(method, self.path, dict(self.headers.items()), body))
            if isinstance(payload, list):  # server-sent events
                self.send_response(status)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                for event in payload:
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                return
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if isinstance(payload, str) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

    return Handler
