"""Console sessions end server-side at sign-out; API keys can expire; the server secret is made once, atomically,
and a configured one that is too short is refused."""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import run_kadapt

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _sign_in(client, key: str) -> str:
    token = CSRF.search(client.get("/ui/login").text).group(1)
    answer = client.post("/ui/login", data={"csrf_token": token, "api_key": key}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return client.cookies["kadapt_session"]


def test_a_signed_out_session_is_refused_even_with_a_copy_of_its_cookie(env):
    from kadapt.catalog.models import RevokedSession

    with env.client(address="192.0.2.80") as client:
        cookie = _sign_in(client, env.keys["admin"])
        assert client.get("/ui/keys", follow_redirects=False).status_code == 200
        token = CSRF.search(client.get("/ui/keys").text).group(1)
        with env.catalog.session() as db:  # a stale record, which the sign-out prunes
            db.add(RevokedSession(token_hash="0" * 64, expires_at=datetime.now(UTC) - timedelta(hours=1)))
        assert client.post("/ui/logout", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    with env.client(address="192.0.2.80") as replay:
        replay.cookies.set("kadapt_session", cookie)
        page = replay.get("/ui/keys", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"].startswith("/ui/login")
        assert replay.get("/ui/login", follow_redirects=False).status_code == 200  # the form, not a redirect loop
    with env.catalog.session() as db:
        hashes = set(db.scalars(select(RevokedSession.token_hash)))
    assert "0" * 64 not in hashes and len(hashes) >= 1
    # signing in again gives a new session that works
    with env.client(address="192.0.2.80") as client:
        _sign_in(client, env.keys["admin"])
        assert client.get("/ui/keys", follow_redirects=False).status_code == 200


def _expire(env, key_id: int) -> None:
    from kadapt.catalog import ApiKey

    with env.catalog.session() as db:
        db.get(ApiKey, key_id).expires_at = datetime.now(UTC) - timedelta(seconds=1)


def test_an_expired_key_is_refused_like_a_revoked_one_and_says_so(env):
    from kadapt.auth import create_key

    key, row = create_key(
        env.catalog,
        env.settings,
        role="admin",
        groups=[],
        name="temp",
        expires_at=datetime.now(UTC) + timedelta(days=1),
    )
    with env.client(address="192.0.2.81") as client:
        assert client.get("/v1/models", headers={"X-API-Key": key}).status_code == 200
        _sign_in(client, key)
        listing = client.get("/ui/keys")
        assert listing.status_code == 200 and "temp" in listing.text
        _expire(env, row.id)
        refused = client.get("/v1/models", headers={"X-API-Key": key})
        assert refused.status_code == 401
        error = refused.json()["error"]
        assert error["code"] == "expired_api_key" and f"API key {row.id} expired at" in error["message"]
        assert client.get("/ui/keys", follow_redirects=False).status_code == 303  # its session ends too
        token = CSRF.search(client.get("/ui/login").text).group(1)
        page = client.post("/ui/login", data={"csrf_token": token, "api_key": key}, follow_redirects=False)
        assert page.status_code == 401 and "has expired" in page.text


def test_the_console_creates_keys_with_an_expiry_and_lists_it(env):
    from kadapt.catalog import ApiKey

    with env.client(address="192.0.2.82") as client:
        _sign_in(client, env.keys["admin"])
        token = CSRF.search(client.get("/ui/keys").text).group(1)
        form = {"csrf_token": token, "role": "reader", "groups": "staff", "name": "expiring-console", "expires": "7d"}
        created = client.post("/ui/keys", data=form)
        assert created.status_code == 201
        with env.catalog.session() as db:
            row = db.scalar(select(ApiKey).where(ApiKey.name == "expiring-console"))
            expires = row.expires_at.replace(tzinfo=row.expires_at.tzinfo or UTC)
        assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)
        assert expires.strftime("%Y-%m-%d %H:%M") in created.text
        bad = client.post("/ui/keys", data=form | {"expires": "someday"})
        assert bad.status_code == 400 and "give a duration such as 30d" in bad.text


def test_kadapt_keys_create_takes_an_expiry_and_lists_it(env):
    created = run_kadapt("keys", "create", "--role", "reader", "--expires-in", "30d", "--json")
    assert created.returncode == 0, created.stderr
    made = json.loads(created.stdout)
    expires = datetime.fromisoformat(made["expires_at"])
    expires = expires.replace(tzinfo=expires.tzinfo or UTC)
    assert timedelta(days=29, hours=23) < expires - datetime.now(UTC) <= timedelta(days=30)
    dated = run_kadapt("keys", "create", "--expires", "2999-01-31", "--json")
    assert dated.returncode == 0 and json.loads(dated.stdout)["expires_at"].startswith("2999-01-31T00:00:00")
    listed = {row["id"]: row for row in json.loads(run_kadapt("keys", "list", "--json").stdout)}
    assert listed[made["id"]]["expires_at"] and listed[made["id"]]["expired"] is False
    for args, message in (
        (["--expires", "2001-01-01"], "is not in the future"),
        (["--expires-in", "soon"], "give a duration such as 30d"),
        (["--expires-in", "1d", "--expires", "2999-01-01"], "not both"),
    ):
        refused = run_kadapt("keys", "create", *args)
        assert refused.returncode == 1 and message in refused.stderr + refused.stdout


def test_the_generated_secret_is_the_same_for_everyone_who_races_to_create_it(tmp_path):
    from kadapt.auth import server_secret
    from kadapt.settings import Settings

    for attempt in range(20):
        settings = Settings(data_dir=tmp_path / f"data-{attempt}", secret_key=None)
        start, seen, errors = threading.Barrier(8), [], []

        def read(settings=settings, start=start, seen=seen, errors=errors) -> None:
            start.wait()
            try:
                seen.append(server_secret(settings))
            except Exception as exc:  # noqa: BLE001 - every failure is reported below
                errors.append(exc)

        threads = [threading.Thread(target=read) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors and len(seen) == 8
        assert len(set(seen)) == 1 and len(seen[0]) == 64, f"attempt {attempt}: {sorted(set(seen))}"
        folder = Path(settings.data_dir)
        assert [path.name for path in folder.iterdir()] == ["secret.key"]  # no temporary file left behind


def test_processes_starting_together_share_one_secret(tmp_path):
    import subprocess
    import sys

    data = tmp_path / "data"
    script = (
        "import sys, time; from kadapt.auth import server_secret; from kadapt.settings import Settings\n"
        "settings = Settings(data_dir=sys.argv[1], secret_key=None)\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "print(server_secret(settings).decode())\n"
    )
    import time

    start_at = str(time.time() + 3)  # every process imports first, then all create the secret at once
    processes = [
        subprocess.Popen([sys.executable, "-c", script, str(data), start_at], stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    secrets = {process.communicate(timeout=120)[0].strip() for process in processes}
    assert all(process.returncode == 0 for process in processes)
    assert len(secrets) == 1 and len(secrets.pop()) == 64


def test_a_configured_secret_that_is_too_short_is_refused(tmp_path):
    from kadapt.auth import server_secret
    from kadapt.errors import InvalidInput
    from kadapt.settings import Settings

    with pytest.raises(InvalidInput, match="KADAPT_SECRET_KEY is 7 characters long; it must have at least 32"):
        server_secret(Settings(data_dir=tmp_path, secret_key="hunter2"))
    assert server_secret(Settings(data_dir=tmp_path, secret_key="x" * 32)) == b"x" * 32


def test_kadapt_serve_refuses_a_short_secret(env):
    import os
    import subprocess
    import sys

    started = subprocess.run(
        [sys.executable, "-m", "kadapt.cli", "serve", "--port", "1"],
        env=dict(os.environ) | {"KADAPT_SECRET_KEY": "hunter2", "NO_COLOR": "1", "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 1
    assert "KADAPT_SECRET_KEY is 7 characters long" in started.stderr + started.stdout


def test_a_cookie_signed_before_sessions_had_ids_is_refused(env):
    """Such a session could not be signed out (each reading would give it a new id): it must sign in again."""
    import base64
    import hashlib
    import hmac
    from dataclasses import asdict

    from kadapt.web.session import decode_session, encode_session, new_session, signing_key

    def b64(data: bytes) -> str:  # base64url without padding, as cookies are written
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    session = new_session(env.settings, key_id=env.key_ids["admin"], key_prefix="x", signed_in=True)
    assert decode_session(env.settings, encode_session(env.settings, session)) == session
    fields = {name: value for name, value in asdict(session).items() if name != "session_id"}
    payload = b64(json.dumps(fields, separators=(",", ":")).encode())  # signed as cookies were before
    signature = b64(hmac.new(signing_key(env.settings), payload.encode(), hashlib.sha256).digest())
    assert decode_session(env.settings, f"{payload}.{signature}") is None


def test_an_expired_key_is_told_so_every_time_and_is_no_guess(env):
    from kadapt.auth import create_key

    key, row = create_key(
        env.catalog, env.settings, role="reader", groups=[], name="lapsed", expires_at=datetime.now(UTC) + timedelta(1)
    )
    _expire(env, row.id)
    with env.client(address="192.0.2.83", auth_failure_limit=2, auth_failure_address_limit=2) as client:
        for _ in range(4):
            refused = client.get("/v1/models", headers={"X-API-Key": key})
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "expired_api_key"
        wrong = {"X-API-Key": key[:-4] + "AAAA"}  # the same prefix, a wrong secret: counted as ever
        assert [client.get("/v1/models", headers=wrong).status_code for _ in range(3)] == [401, 401, 429]
