"""Repeated failed API keys from one address: 429 with Retry-After, for a right key too, until the window ends."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
from sqlalchemy import select

LIMIT, WINDOW = 3, 3  # seconds; short so that the test can wait for the window to pass


def _audit_blocks(env, client: str) -> int:
    from kadapt.catalog.models import AuditEvent

    with env.catalog.session() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "auth.blocked"))
        return sum(1 for event in events if event.client == client)


def test_repeated_bad_keys_block_the_address_then_the_window_frees_it(env):
    good, bad = env.headers("admin"), {"Authorization": f"Bearer {env.keys['admin'][:-4]}AAAA"}
    with env.client(address="203.0.113.7", auth_failure_limit=LIMIT, auth_failure_window=WINDOW) as client:
        for _ in range(5):  # successes never count
            assert client.get("/v1/models", headers=good).status_code == 200
        for _ in range(LIMIT):
            assert client.get("/v1/models", headers=bad).status_code == 401
        blocked = client.get("/v1/models", headers=bad)
        assert blocked.status_code == 429
        assert 1 <= int(blocked.headers["retry-after"]) <= WINDOW
        error = blocked.json()["error"]
        assert error["type"] == "rate_limit_error" and error["code"] == "too_many_auth_failures"
        assert (
            "too many failed API key attempts" in error["message"] and "KADAPT_AUTH_FAILURE_LIMIT" in error["message"]
        )
        right_key = client.post("/v1/kbs", headers=good, json={"slug": "never-made"})
        assert right_key.status_code == 429 and "retry-after" in right_key.headers
        assert client.get("/healthz").status_code == 200  # routes without keys are not affected
        assert _audit_blocks(env, "203.0.113.7") == 1

        time.sleep(int(blocked.headers["retry-after"]) + 0.5)
        assert client.get("/v1/models", headers=good).status_code == 200
        assert client.get("/v1/models", headers=bad).status_code == 401  # counting starts afresh


def test_other_addresses_are_not_blocked(env):
    from fastapi.testclient import TestClient

    app = env.app(auth_failure_limit=LIMIT, auth_failure_window=60)
    bad = {"X-API-Key": "kad_000000000000_wrong"}
    with TestClient(app, client=("198.51.100.1", 1)) as attacker, TestClient(app, client=("198.51.100.2", 1)) as user:
        for _ in range(LIMIT + 1):
            attacker.get("/v1/models", headers=bad)
        assert attacker.get("/v1/models", headers=env.headers("admin")).status_code == 429
        assert user.get("/v1/models", headers=env.headers("admin")).status_code == 200


def test_a_request_without_a_key_does_not_count(env):
    with env.client(address="198.51.100.9", auth_failure_limit=LIMIT, auth_failure_window=60) as client:
        for _ in range(LIMIT * 3):
            assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers=env.headers("reader_member")).status_code == 200


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def test_console_sign_in_is_throttled_too(env):
    with env.client(address="192.0.2.44", auth_failure_limit=LIMIT, auth_failure_window=60) as client:
        token = CSRF.search(client.get("/ui/login").text).group(1)
        wrong = {"csrf_token": token, "api_key": env.keys["admin"][:-4] + "AAAA"}
        for _ in range(LIMIT):
            assert client.post("/ui/login", data=wrong, follow_redirects=False).status_code == 401
        page = client.post("/ui/login", data=wrong | {"api_key": env.keys["admin"]}, follow_redirects=False)
        assert page.status_code == 429 and int(page.headers["retry-after"]) >= 1
        assert "Too many failed sign-ins" in page.text
        assert "set-cookie" not in page.headers
        # the API shares the count: the same address is blocked there as well
        assert client.get("/v1/models", headers=env.headers("admin")).status_code == 429
    assert _audit_blocks(env, "192.0.2.44") == 1


def test_failure_counters_are_dropped_when_their_window_ends():
    from kadapt.throttle import AuthThrottle

    throttle = AuthThrottle(limit=2, window_seconds=1)
    for number in range(500):
        throttle.failed(f"10.1.{number // 250}.{number % 250}")
    storage = throttle._limiter.storage
    assert len(storage.storage) == 500
    time.sleep(1.5)
    throttle.failed("10.9.9.9")  # the store sweeps expired counters as new failures come in
    time.sleep(0.5)
    assert len(storage.storage) == 1  # only the address that failed in the current window


def test_ipv6_clients_count_per_64_network():
    from kadapt.throttle import client_key

    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"


@pytest.fixture
def redis_url(tmp_path):
    """A real Redis server on 127.0.0.1 for this test (Debian's redis-server, which .ci/run installs)."""
    import socket
    import subprocess

    import redis

    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 20
    while True:
        try:
            redis.Redis.from_url(url, socket_timeout=1).ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline and server.poll() is None, "redis-server did not start"
            time.sleep(0.1)
    yield url, server
    server.terminate()
    server.wait(10)


def test_api_replicas_share_the_count_through_redis_and_an_outage_falls_back_to_counting_alone(env, redis_url):
    from fastapi.testclient import TestClient

    url, server = redis_url
    good, bad = env.headers("admin"), {"X-API-Key": "kad_000000000000_wrong"}
    settings = {"auth_failure_limit": LIMIT, "auth_failure_window": 60, "auth_failure_storage": url}
    replica_a, replica_b = env.app(**settings), env.app(**settings)
    with (
        TestClient(replica_a, client=("198.51.100.77", 1), raise_server_exceptions=False) as a,
        TestClient(replica_b, client=("198.51.100.77", 1), raise_server_exceptions=False) as b,
    ):
        for _ in range(LIMIT - 1):
            assert a.get("/v1/models", headers=bad).status_code == 401
        assert b.get("/v1/models", headers=bad).status_code == 401  # the attempt that reaches the limit
        for replica in (a, b):  # each replica now refuses the address, a right key included
            refused = replica.get("/v1/models", headers=good)
            assert refused.status_code == 429 and "retry-after" in refused.headers

        server.terminate()  # Redis goes away: sign-ins still work, and failures are counted per process
        server.wait(10)
        assert a.get("/v1/models", headers=good).status_code == 200
        for _ in range(LIMIT):
            assert a.get("/v1/models", headers=bad).status_code == 401
        assert a.get("/v1/models", headers=good).status_code == 429


def test_an_unknown_failure_storage_is_a_clear_error_when_the_server_starts(env):
    from kadapt.errors import InvalidInput

    with pytest.raises(InvalidInput, match=r"KADAPT_AUTH_FAILURE_STORAGE=mongodb\+nope://x: unknown storage"):
        env.app(auth_failure_storage="mongodb+nope://x")
    with pytest.raises(InvalidInput, match=r"KADAPT_AUTH_FAILURE_STORAGE=memcached://u:\*\*\*@h:1: .*pymemcache"):
        env.app(auth_failure_storage="memcached://u:secret@h:1")
