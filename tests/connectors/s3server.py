"""A real S3-compatible server on 127.0.0.1 for the s3 connector's tests: moto's server mode (from PyPI),
started as its own process, with its request log kept so that a test can see which objects a sync read."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port

_REQUEST = re.compile(r'"(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP/[\d.]+" (\d{3})')


class S3Server:
    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        moto = Path(sys.executable).with_name("moto_server")
        self._stream = log.open("w")
        self._process = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._stream,
            stderr=subprocess.STDOUT,
            env=dict(os.environ) | {"PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "/moto-api/", timeout=2)
                break
            except httpx.TransportError:
                if self._process.poll() is not None:
                    raise RuntimeError(f"moto_server exited: {log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        else:
            raise RuntimeError("moto_server did not start within 60 s")

    def client(self):
        """An administrator's client (moto takes any key) for setting up buckets and objects."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id="admin",
            aws_secret_access_key="admin",
            region_name="us-east-1",
        )

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path with query, status) of every request the server has answered so far."""
        self._stream.flush()
        return [(m, path, int(status)) for m, path, status in _REQUEST.findall(self.log.read_text())]

    def mark(self) -> int:
        return len(self.requests())

    def since(self, mark: int) -> list[tuple[str, str, int]]:
        return self.requests()[mark:]

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._stream.close()
