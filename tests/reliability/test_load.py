"""A short load run (bench/load.py): concurrent clients, streaming and not, against a real `kadapt serve` on
127.0.0.1; every request is answered in full and none gets a server error."""

from __future__ import annotations

import asyncio
import os

import pytest
from bench.load import report, run_load

from tests.conftest import REPO, Server, _clear_caches, build_handbook

CLIENTS = 8
SECONDS = 10.0


@pytest.mark.slow
def test_concurrent_clients_get_every_answer_and_no_server_error(kadapt_env, monkeypatch):
    from kadapt.auth import create_key
    from kadapt.catalog import open_catalog
    from kadapt.settings import get_settings

    monkeypatch.setenv("KADAPT_ALLOWED_ROOTS", str(REPO / "samples"))
    _clear_caches()
    catalog = open_catalog()
    build_handbook(catalog, get_settings(), reader_groups=["staff"])
    key = create_key(catalog, get_settings(), role="reader", groups=["staff"], name="load")[0]
    server = Server(dict(os.environ), "--preload", "smollm2-135m")
    try:
        result = asyncio.run(
            run_load(
                server.url,
                clients=CLIENTS,
                seconds=SECONDS,
                max_tokens=4,
                headers={"Authorization": f"Bearer {key}"},
                pid=server.process.pid,
            )
        )
    finally:
        server.stop()
    summary = "\n".join(report(result))
    assert result.server_errors == 0, summary
    assert not result.failed, summary
    assert len(result.outcomes) >= CLIENTS, summary  # every client got at least one answer
    streamed = [outcome for outcome in result.outcomes if outcome.stream]
    assert streamed and len(streamed) < len(result.outcomes), summary  # both kinds of request
    assert all(outcome.tokens >= 1 for outcome in result.outcomes), summary
    assert all(outcome.first_token is not None for outcome in streamed), summary
    assert result.rss, summary  # the server's memory was sampled
