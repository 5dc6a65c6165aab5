"""Security headers on every response (the API's JSON too), no caching of answers, and CORS closed by default."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def client(env):
    with env.client() as opened:
        yield opened


def test_api_answers_carry_security_headers_and_are_not_cached(env, client, make_kb):
    names = make_kb()
    answers = {
        "models": client.get("/v1/models", headers=env.headers("admin")),
        "kb": client.get(f"/v1/kbs/{names['kb']}", headers=env.headers("admin")),
        "unauthenticated": client.get("/v1/models"),
        "hidden KB": client.get(f"/v1/kbs/{names['kb']}/search?q=x", headers=env.headers("reader_other")),
        "bad request": client.post("/v1/kbs", headers=env.headers("admin"), content=b"{nope"),
        "health": client.get("/healthz"),
        "no route": client.get("/v2/nothing"),
    }
    assert [answer.status_code for answer in answers.values()] == [200, 200, 401, 404, 400, 200, 404]
    for name, answer in answers.items():
        assert answer.headers["x-content-type-options"] == "nosniff", name
        assert answer.headers["x-frame-options"] == "DENY", name
        assert answer.headers["referrer-policy"] == "no-referrer", name
        assert answer.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'", name
        assert answer.headers["cache-control"] == "no-store", name


def test_html_from_the_api_gets_a_policy_without_script(env, client, make_kb):
    report = client.get(f"/reports/{make_kb()['kb']}", headers=env.headers("admin"))
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    policy = report.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy and "script-src" not in policy
    docs = client.get("/docs")  # the interactive docs load their script from a CDN: only framing is refused
    assert docs.status_code == 200 and docs.headers["content-security-policy"] == "frame-ancestors 'none'"
    assert docs.headers["x-frame-options"] == "DENY"


def test_console_pages_keep_their_own_policy(client):
    page = client.get("/ui/login")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "same-origin"  # the console's, not overridden
    assert page.headers["cache-control"] == "no-store"
    static = client.get("/ui/static/kadapt.css")
    assert static.status_code == 200 and "no-store" not in static.headers.get("cache-control", "")
    assert static.headers["x-content-type-options"] == "nosniff"


PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}


def test_cors_is_closed_by_default(env, client):
    assert env.settings.cors_origins == []
    origin = {"Origin": "https://intranet.example"}
    preflight = client.options("/v1/chat/completions", headers=origin | PREFLIGHT)
    assert "access-control-allow-origin" not in preflight.headers
    assert not any(name.startswith("access-control-") for name in preflight.headers)
    answer = client.get("/v1/models", headers=origin | env.headers("reader_member"))
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers


def test_cors_answers_only_the_listed_origins(env):
    listed, other = "https://intranet.example", "https://evil.example"
    with env.client(cors_origins=[listed]) as client:
        allowed = client.options("/v1/chat/completions", headers={"Origin": listed} | PREFLIGHT)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == listed
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in allowed.headers
        refused = client.options("/v1/chat/completions", headers={"Origin": other} | PREFLIGHT)
        assert "access-control-allow-origin" not in refused.headers
        simple = client.get("/v1/models", headers={"Origin": other} | env.headers("reader_member"))
        assert "access-control-allow-origin" not in simple.headers
        simple = client.get("/v1/models", headers={"Origin": listed} | env.headers("reader_member"))
        assert simple.headers["access-control-allow-origin"] == listed


def test_cors_origins_must_be_origins(monkeypatch):
    from pydantic import ValidationError

    from kadapt.settings import Settings

    monkeypatch.setenv("KADAPT_CORS_ORIGINS", "https://a.example, http://b.example:8080/")
    assert Settings().cors_origins == ["https://a.example", "http://b.example:8080"]
    monkeypatch.setenv("KADAPT_CORS_ORIGINS", "https://a.example/app")
    with pytest.raises(ValidationError, match="is not an origin"):
        Settings()
