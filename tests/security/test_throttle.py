"""Repeated failed API keys from one address: wrong keys get 429 with Retry-After until the window ends, counted
per (address, key prefix) and per address; a valid key always gets in, so nobody at the same address (one NAT,
one ingress) can lock colleagues out. Behind a proxy listed in KADAPT_TRUSTED_PROXIES the client is the address
it forwards, and only then."""

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


def _audit_clients(env, kb: str) -> set[str]:
    from kadapt.catalog.models import AuditEvent

    with env.catalog.session() as session:
        return {event.client for event in session.scalars(select(AuditEvent).where(AuditEvent.kb == kb))}


def test_repeated_bad_keys_are_refused_then_the_window_frees_them_and_the_right_key_always_gets_in(env):
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
        # the key's owner, at the same address as whoever is guessing their key, still gets in
        assert client.get("/v1/models", headers=good).status_code == 200
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
        assert attacker.get("/v1/models", headers=bad).status_code == 429
        assert user.get("/v1/models", headers=bad).status_code == 401
        assert attacker.get("/v1/models", headers=env.headers("admin")).status_code == 200


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
        page = client.post("/ui/login", data=wrong, follow_redirects=False)
        assert page.status_code == 429 and int(page.headers["retry-after"]) >= 1
        assert "Too many failed sign-ins" in page.text
        assert "set-cookie" not in page.headers
        # the API shares the count: the same wrong key is refused there as well
        assert client.get("/v1/models", headers={"X-API-Key": wrong["api_key"]}).status_code == 429
        # and the key's owner signs in from the same address all the same
        signed_in = client.post("/ui/login", data=wrong | {"api_key": env.keys["admin"]}, follow_redirects=False)
        assert signed_in.status_code == 303 and "kadapt_session=" in signed_in.headers["set-cookie"]
    assert _audit_blocks(env, "192.0.2.44") == 1


def test_failure_counters_are_dropped_when_their_window_ends():
    from kadapt.throttle import AuthThrottle

    throttle = AuthThrottle(limit=2, window_seconds=1)
    for number in range(500):
        throttle.failed(f"10.1.{number // 250}.{number % 250}", "malformed")
    storage = throttle._limiter.storage
    assert len(storage.storage) == 1000  # (address, prefix) and address, for each address
    time.sleep(1.5)
    throttle.failed("10.9.9.9", "malformed")  # the store sweeps expired counters as new failures come in
    time.sleep(0.5)
    assert len(storage.storage) == 2  # only the address that failed in the current window


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
        for replica in (a, b):  # each replica now refuses the wrong key, and still lets the right one in
            refused = replica.get("/v1/models", headers=bad)
            assert refused.status_code == 429 and "retry-after" in refused.headers
            assert replica.get("/v1/models", headers=good).status_code == 200

        server.terminate()  # Redis goes away: sign-ins still work, and failures are counted per process
        server.wait(10)
        assert a.get("/v1/models", headers=good).status_code == 200
        for _ in range(LIMIT):
            assert a.get("/v1/models", headers=bad).status_code == 401
        assert a.get("/v1/models", headers=bad).status_code == 429
        assert a.get("/v1/models", headers=good).status_code == 200


def test_an_unknown_failure_storage_is_a_clear_error_when_the_server_starts(env):
    from kadapt.errors import InvalidInput

    with pytest.raises(InvalidInput, match=r"KADAPT_AUTH_FAILURE_STORAGE=mongodb\+nope://x: unknown storage"):
        env.app(auth_failure_storage="mongodb+nope://x")
    with pytest.raises(InvalidInput, match=r"KADAPT_AUTH_FAILURE_STORAGE=memcached://u:\*\*\*@h:1: .*pymemcache"):
        env.app(auth_failure_storage="memcached://u:secret@h:1")


def _wrong_key(prefix: str) -> dict[str, str]:
    return {"X-API-Key": f"kad_{prefix}_{'A' * 32}"}


def test_an_attacker_behind_the_same_address_cannot_lock_a_colleague_out(env):
    """Everyone behind one NAT shares an address: guessing a colleague's key (its prefix is public), then
    rotating prefixes past the address limit, never refuses the colleague's valid key."""
    victim = env.keys["reader_member"]
    victim_prefix = victim.split("_")[1]
    settings = {"auth_failure_limit": LIMIT, "auth_failure_address_limit": 2 * LIMIT, "auth_failure_window": 60}
    with env.client(address="198.51.100.30", **settings) as office:
        for _ in range(LIMIT):
            assert office.get("/v1/models", headers=_wrong_key(victim_prefix)).status_code == 401
        assert office.get("/v1/models", headers=_wrong_key(victim_prefix)).status_code == 429
        assert office.get("/v1/models", headers={"X-API-Key": victim}).status_code == 200
        for number in range(LIMIT):  # other prefixes: counted apart until the address limit
            assert office.get("/v1/models", headers=_wrong_key(f"{number:012x}")).status_code == 401
        refused = office.get("/v1/models", headers=_wrong_key("abcdefabcdef"))
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "KADAPT_AUTH_FAILURE_ADDRESS_LIMIT" in refused.json()["error"]["message"]
        assert office.get("/v1/models", headers={"Authorization": f"Bearer {victim}"}).status_code == 200
        assert office.get("/v1/models", headers=env.headers("admin")).status_code == 200


def test_failures_count_per_key_prefix_until_the_address_limit(env):
    settings = {"auth_failure_limit": LIMIT, "auth_failure_address_limit": 100, "auth_failure_window": 60}
    with env.client(address="198.51.100.31", **settings) as client:
        for _ in range(LIMIT):
            assert client.get("/v1/models", headers=_wrong_key("111111111111")).status_code == 401
        blocked = client.get("/v1/models", headers=_wrong_key("111111111111"))
        assert blocked.status_code == 429
        assert "key prefix 111111111111" in blocked.json()["error"]["message"]
        # a different prefix is another key: the same address still gets a plain 401 for it
        assert client.get("/v1/models", headers=_wrong_key("222222222222")).status_code == 401
        # junk that is not shaped like a key counts under one prefix, so it cannot mint counters
        for junk in ("nonsense", "kad_x_y", "kad_ZZZZZZZZZZZZ_y"):
            client.get("/v1/models", headers={"X-API-Key": junk})
        assert client.get("/v1/models", headers={"X-API-Key": "kad_--_--"}).status_code == 429


def test_forwarded_for_is_believed_from_a_trusted_proxy_only(env):
    from fastapi.testclient import TestClient

    settings = {"auth_failure_limit": LIMIT, "auth_failure_window": 60, "trusted_proxies": ["10.0.0.0/8"]}
    app = env.app(**settings)
    bad = _wrong_key("333333333333")
    with TestClient(app, client=("10.4.5.6", 1)) as proxy, TestClient(app, client=("198.51.100.40", 1)) as direct:
        # two clients behind the ingress: each has its own count, under its own address
        first = {"X-Forwarded-For": "203.0.113.21", **bad}
        for _ in range(LIMIT):
            assert proxy.get("/v1/models", headers=first).status_code == 401
        refused = proxy.get("/v1/models", headers=first)
        assert refused.status_code == 429 and "from 203.0.113.21" in refused.json()["error"]["message"]
        assert proxy.get("/v1/models", headers={"X-Forwarded-For": "203.0.113.22", **bad}).status_code == 401
        assert _audit_blocks(env, "203.0.113.21") == 1
        # the audit log names the client of an admin action, not the ingress
        admin = {"X-Forwarded-For": "203.0.113.23", **env.headers("admin")}
        assert proxy.post("/v1/kbs", headers=admin, json={"slug": "made-via-proxy"}).status_code == 201
        assert _audit_clients(env, "made-via-proxy") == {"203.0.113.23"}
        # a client that is no proxy cannot choose its address: the header is ignored
        for number in range(LIMIT):
            forged = {"X-Forwarded-For": f"192.0.2.{number + 1}", **bad}
            assert direct.get("/v1/models", headers=forged).status_code == 401
        refused = direct.get("/v1/models", headers={"X-Forwarded-For": "192.0.2.99", **bad})
        assert refused.status_code == 429 and "from 198.51.100.40" in refused.json()["error"]["message"]


@pytest.mark.parametrize("trusted", ["", "127.0.0.1"])
def test_kadapt_serve_believes_forwarded_for_only_from_configured_proxies(env, trusted):
    """``kadapt serve`` on 127.0.0.1: uvicorn alone would believe X-Forwarded-For from 127.0.0.1."""
    import os

    import httpx

    from tests.conftest import Server

    server = Server(
        dict(os.environ) | {"KADAPT_AUTH_FAILURE_LIMIT": "1", "KADAPT_TRUSTED_PROXIES": trusted},
    )
    try:
        headers = {"X-Forwarded-For": "203.0.113.60", **_wrong_key("444444444444")}
        assert httpx.get(server.url + "/v1/models", headers=headers).status_code == 401
        refused = httpx.get(server.url + "/v1/models", headers=headers)
        assert refused.status_code == 429
        client = "203.0.113.60" if trusted else "127.0.0.1"
        assert f"from {client}:" in refused.json()["error"]["message"]
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("setting", "peer", "forwarded_proto", "secure"),
    [
        ("auto", "10.4.5.6", "https", True),  # TLS ends at a trusted proxy
        ("auto", "198.51.100.50", "https", False),  # anyone else's header is ignored
        ("auto", "10.4.5.6", None, False),
        ("always", "198.51.100.50", None, True),
        ("never", "10.4.5.6", "https", False),
    ],
)
def test_the_secure_cookie_flag_follows_the_setting_and_trusted_proxies(env, setting, peer, forwarded_proto, secure):
    from fastapi.testclient import TestClient

    app = env.app(trusted_proxies=["10.0.0.0/8"], secure_cookies=setting)
    headers = {"X-Forwarded-Proto": forwarded_proto} if forwarded_proto else {}
    with TestClient(app, client=(peer, 1)) as client:
        cookie = client.get("/ui/login", headers=headers).headers["set-cookie"]
    assert cookie.startswith("kadapt_session=")
    assert ("; secure" in cookie.lower()) is secure


def test_trusted_proxies_must_be_addresses_or_networks():
    from pydantic import ValidationError

    from kadapt.settings import Settings

    assert Settings(trusted_proxies="10.0.0.0/8, 192.0.2.7,2001:db8::/32").trusted_proxies == [
        "10.0.0.0/8",
        "192.0.2.7",
        "2001:db8::/32",
    ]
    with pytest.raises(ValidationError, match="'ingress.local' is not an IP address or network"):
        Settings(trusted_proxies="ingress.local")
