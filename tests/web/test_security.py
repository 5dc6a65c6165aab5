"""The console over plain HTTP: sign-in, the session cookie, CSRF, revoked keys, security headers, and who may
open or post to each page (the console's routes are outside the OpenAPI schema, so tests/api/test_auth.py's
matrix does not cover them; this one does)."""

from __future__ import annotations

import itertools
import re

import httpx
import pytest

from tests.access import fill, guarded_kb
from tests.web.conftest import PRINCIPALS, Session, login_form, sign_in

ALLOWED = "admin", "editor_owner"  # may manage the KB under test (read by staff, owned by hr)
# "editor_reader" is an editor in a reader group only: it opens the KB's admin pages but manages nothing
MANAGE = {"admin": 303, "editor_owner": 303, "editor_other": 404, "reader_member": 403, "reader_other": 403}
MANAGE |= {"editor_reader": 403}
READ_ADMIN_PAGE = {"admin": 200, "editor_owner": 200, "editor_other": 404, "reader_member": 403, "reader_other": 403}
READ_ADMIN_PAGE |= {"editor_reader": 200}
READ = {"admin": 200, "editor_owner": 200, "editor_other": 404, "reader_member": 200, "reader_other": 404}
READ |= {"editor_reader": 200}
EDITORS = {"admin": 200, "editor_owner": 200, "editor_other": 200, "reader_member": 403, "reader_other": 403}
EDITORS |= {"editor_reader": 200}
ADMIN_ONLY = {"admin": 200, "editor_owner": 403, "editor_other": 403, "reader_member": 403, "reader_other": 403}
ADMIN_ONLY |= {"editor_reader": 403}
OWNER_ONLY = dict.fromkeys(PRINCIPALS, 404) | {"reader_member": 200}
CREATE = dict.fromkeys(EDITORS, 303) | {"reader_member": 403, "reader_other": 403}  # a new KB, then its page
CHAT = {"kb": "{kb}", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}

# (method, path, body) -> expected status per principal; anyone not signed in is sent to the sign-in page
# (GET: 303) or refused (POST: 401). A dict body is a form; CHAT goes as JSON with the CSRF header.
ROUTES = [
    ("GET", "/ui/", None, dict.fromkeys(PRINCIPALS, 200) | {"reader_member": 303, "reader_other": 303}),
    ("GET", "/ui/chat", None, dict.fromkeys(PRINCIPALS, 200)),
    ("POST", "/ui/chat/stream", CHAT, READ),
    ("POST", "/ui/kbs", {"slug": "new-{kb}"}, CREATE),
    ("GET", "/ui/kbs/{kb}", None, READ_ADMIN_PAGE),
    ("GET", "/ui/kbs/{kb}/status", None, READ_ADMIN_PAGE),
    ("POST", "/ui/kbs/{kb}/sources", {"kind": "files", "path": "{docs}"}, MANAGE),
    ("POST", "/ui/kbs/{kb}/sources/{source}/edit", {"config": '{"path": "{docs}"}'}, MANAGE),
    ("POST", "/ui/kbs/{kb}/sources/{source}/remove", {}, MANAGE),
    ("POST", "/ui/kbs/{kb}/sync", {}, MANAGE),
    ("POST", "/ui/kbs/{kb}/adapt", {}, MANAGE),
    ("POST", "/ui/kbs/{kb}/train", {"mode": "ft"}, MANAGE),
    ("POST", "/ui/kbs/{kb}/mode", {"mode": "icl"}, MANAGE),
    ("POST", "/ui/kbs/{kb}/workload", {"queries_per_day": "50"}, MANAGE),
    ("GET", "/ui/kbs/{kb}/decision", None, READ_ADMIN_PAGE),
    ("GET", "/ui/kbs/{kb}/documents", None, READ_ADMIN_PAGE),
    ("GET", "/ui/chat/conversations?kb={kb}", None, READ),
    # a conversation is its owner's alone (here reader_member's): an admin gets 404 like anyone else
    ("GET", "/ui/chat/conversations/{conversation}", None, OWNER_ONLY),
    ("POST", "/ui/chat/conversations/{conversation}/delete", {}, OWNER_ONLY),
    ("GET", "/ui/kbs/{kb}/report", None, READ),
    ("GET", "/ui/kbs/{kb}/report.json", None, READ),
    ("GET", "/ui/kbs/handbook/documents/{document}", None, READ),
    ("GET", "/ui/jobs", None, EDITORS),
    ("GET", "/ui/jobs/{job}", None, READ_ADMIN_PAGE),
    ("GET", "/ui/jobs/{job}/progress", None, READ_ADMIN_PAGE),
    ("POST", "/ui/jobs/{job}/cancel", {}, MANAGE),
    ("GET", "/ui/keys", None, ADMIN_ONLY),
    ("POST", "/ui/keys", {"role": "reader", "groups": "staff"}, ADMIN_ONLY | {"admin": 201}),
    ("POST", "/ui/keys/{key}/revoke", {}, ADMIN_ONLY | {"admin": 303}),
    ("POST", "/ui/logout", {}, dict.fromkeys([*PRINCIPALS, "anonymous"], 303)),
    # company sign-in is public, and answers 404 where it is not configured (as here; tests/web/test_oidc.py)
    ("GET", "/ui/oidc/start", None, dict.fromkeys([*PRINCIPALS, "anonymous"], 404)),
    ("GET", "/ui/oidc/callback?code=x&state=y", None, dict.fromkeys([*PRINCIPALS, "anonymous"], 404)),
    ("GET", "/ui/no-such-page", None, dict.fromkeys(PRINCIPALS, 404)),
]
CELLS = [
    (method, path, body, principal, expected.get(principal, 303 if method == "GET" else 401))
    for method, path, body, expected in ROUTES
    for principal in [*PRINCIPALS, "anonymous"]
]
ALERT = re.compile(r'role="alert">([^<]*)<')
_counter = itertools.count()


@pytest.fixture(scope="module")
def sessions(console):
    opened = {name: sign_in(console.url, key) for name, key in console.keys.items()}
    anonymous = httpx.Client(base_url=console.url, timeout=60, follow_redirects=False)
    opened["anonymous"] = Session(anonymous, login_form(anonymous))
    yield opened
    for session in opened.values():
        session.client.close()


@pytest.fixture(scope="module")
def document_id(console):
    from sqlalchemy import select

    from kadapt.catalog import Document
    from kadapt.kbs import get_kb

    with console.catalog.session() as session:
        return session.scalar(select(Document.id).where(Document.kb_id == get_kb(console.catalog, "handbook").id))


def _fresh_kb(console) -> dict[str, str]:
    """A KB read by staff and owned by hr, with a source, a queued job and a decision; and a key to revoke."""
    from kadapt.auth import create_key

    docs = console.root / "matrix-docs"
    if not docs.exists():
        docs.mkdir()
        (docs / "leave.md").write_text("# Leave\n\nEmployees get 27 days of leave.\n")
    names = guarded_kb(console.catalog, console.settings, f"matrix{next(_counter)}", docs)
    _, key = create_key(console.catalog, console.settings, role="reader", groups=[])
    return names | {"key": str(key.id), "conversation": _conversation(console, names["kb"])}


def _conversation(console, slug: str) -> str:
    """A conversation of reader_member's with KB ``slug``."""
    from sqlalchemy import select

    from kadapt.catalog import ApiKey
    from kadapt.conversations import record_turn
    from kadapt.kbs import get_kb

    with console.catalog.session() as session:
        key_id = session.scalar(select(ApiKey.id).where(ApiKey.name == "reader_member"))
    turn = {"question": "How many days of leave?", "answer": "27 days.", "sources": [], "citations": []}
    return record_turn(console.catalog, f"key:{key_id}", get_kb(console.catalog, slug), None, turn)


def _cancel_started_job(console, response: httpx.Response) -> None:
    """An Adapt or Train the matrix started is cancelled at once: the test checks who may start it, not the job."""
    from kadapt.jobs import cancel_job

    job = re.search(r"[?&]job=(\w+)", response.headers.get("location", ""))
    if job:
        cancel_job(console.catalog, job.group(1))


def _request(session: Session, method: str, path: str, body) -> httpx.Response:
    headers = {"Accept": "text/html"}
    if method == "GET":
        return session.client.get(path, headers=headers)
    if body is not None and "messages" in body:
        return session.client.post(path, json=body, headers={"X-CSRF-Token": session.csrf})
    return session.form(path, body, headers=headers)


@pytest.mark.parametrize(
    ("method", "path", "body", "principal", "expected"), CELLS, ids=[f"{m} {p} as {who}" for m, p, _, who, _ in CELLS]
)
def test_console_access(console, sessions, document_id, method, path, body, principal, expected):
    names = _fresh_kb(console) | {"document": document_id}
    session = sessions[principal]
    if path == "/ui/logout":  # signing out ends the session: use a throwaway one
        if principal == "anonymous":
            client = httpx.Client(base_url=console.url, timeout=120, follow_redirects=False)
            session = Session(client, login_form(client))
        else:
            session = sign_in(console.url, console.keys[principal])
    response = _request(session, method, fill(path, names), fill(body, names))
    _cancel_started_job(console, response)
    assert response.status_code == expected, response.text[:2000]
    if expected == 303 and principal == "anonymous" and method == "GET":
        assert response.headers["location"].startswith("/ui/login?next=")
    if expected == 404:  # a KB of another group is indistinguishable from a KB that does not exist
        ghost = names | {"kb": "no-such-kb"}
        other = _request(session, method, fill(path, ghost), fill(body, ghost))
        assert other.status_code == 404
        assert _message(other).replace("no-such-kb", names["kb"]) == _message(response)


def _message(response: httpx.Response) -> str:
    if response.headers["content-type"].startswith("application/json"):
        return response.json()["error"]["message"]
    return ALERT.search(response.text).group(1)


def test_a_bad_key_gets_a_message_and_no_session(console):
    with httpx.Client(base_url=console.url, timeout=120, follow_redirects=False) as client:
        token = login_form(client)
        response = client.post("/ui/login", data={"csrf_token": token, "api_key": console.keys["admin"][:-4] + "AAAA"})
        assert response.status_code == 401
        assert "not valid" in ALERT.search(response.text).group(1)
        assert "set-cookie" not in response.headers
        assert client.get("/ui/").headers["location"] == "/ui/login?next=/ui/"


def test_the_session_cookie_is_httponly_strict_and_signed(console):
    with httpx.Client(base_url=console.url, timeout=120, follow_redirects=False) as client:
        token = login_form(client)
        response = client.post("/ui/login", data={"csrf_token": token, "api_key": console.keys["admin"]})
        assert response.status_code == 303
        cookie = response.headers["set-cookie"]
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite", "path", "max-age"} <= attributes
        assert "samesite=strict" in cookie.lower()
        assert "secure" not in attributes  # plain http here; https responses add Secure
        assert client.get("/ui/").status_code == 200
        value = client.cookies["kadapt_session"]
        payload, signature = value.split(".")
        client.cookies.set("kadapt_session", payload[:-2] + "AA." + signature)
        assert client.get("/ui/").status_code == 303  # a tampered cookie is no session


def test_posts_need_the_session_csrf_token(console, sessions):
    admin = sessions["admin"]
    for data in ({}, {"csrf_token": "forged"}):
        response = admin.client.post("/ui/kbs/handbook/sync", data=data, headers={"Accept": "text/html"})
        assert response.status_code == 403
        assert "security token" in ALERT.search(response.text).group(1)
    response = admin.client.post(
        "/ui/chat/stream", json={"kb": "handbook", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert response.status_code == 403
    with httpx.Client(base_url=console.url, timeout=120) as client:  # the sign-in form is protected too
        response = client.post("/ui/login", data={"api_key": console.keys["admin"]})
        assert response.status_code == 403


def test_a_revoked_key_is_signed_out(console):
    from kadapt.auth import create_key, revoke_key

    key, row = create_key(console.catalog, console.settings, role="admin", groups=[])
    session = sign_in(console.url, key)
    assert session.client.get("/ui/").status_code == 200
    revoke_key(console.catalog, row.id)
    response = session.client.get("/ui/")
    assert response.status_code == 303 and response.headers["location"].startswith("/ui/login")
    assert "kadapt_session=" in response.headers["set-cookie"]  # the dead session's cookie is deleted
    assert session.form("/ui/kbs/handbook/sync").status_code == 401


def test_cookies_do_not_authenticate_the_api(console, sessions):
    assert sessions["admin"].client.get("/v1/models").status_code == 401


def test_sign_in_only_redirects_within_the_console(console):
    with httpx.Client(base_url=console.url, timeout=120, follow_redirects=False) as client:
        for target, expected in (("/ui/jobs", "/ui/jobs"), ("//evil.example/ui/", "/ui/"), ("https://x.y/", "/ui/")):
            client.cookies.clear()
            token = login_form(client)
            data = {"csrf_token": token, "api_key": console.keys["admin"], "next": target}
            assert client.post("/ui/login", data=data).headers["location"] == expected


def test_pages_send_security_headers(console, sessions):
    for path in ("/ui/login", "/ui/", "/ui/kbs/handbook", "/ui/static/kadapt.css", "/ui/kbs/no-such-kb"):
        response = sessions["admin"].client.get(path)
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "same-origin"
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    report = sessions["admin"].client.get(f"/ui/kbs/{_fresh_kb(console)['kb']}/report")
    assert report.status_code == 200 and "script-src" not in report.headers["content-security-policy"]
    assert "default-src 'none'" in report.headers["content-security-policy"]  # inline styles, no script at all


def test_forms_and_keys_round_trip(console, sessions):
    admin = sessions["admin"]
    created = admin.form("/ui/keys", {"name": "carol", "role": "reader", "groups": "staff"})
    assert created.status_code == 201
    key = re.search(r'id="new-key" class="key" value="(kad_[^"]+)"', created.text).group(1)
    assert key not in admin.client.get("/ui/keys").text  # shown once
    carol = sign_in(console.url, key)
    assert carol.client.get("/ui/chat").status_code == 200
    bad = admin.form("/ui/kbs", {"slug": "Bad Name"})
    assert bad.status_code == 400 and "invalid KB name" in ALERT.search(bad.text).group(1)
    outside = admin.form("/ui/kbs/handbook/sources", {"kind": "files", "path": "/etc"})
    assert outside.status_code == 403 and "outside the allowed roots" in outside.text
    broken = admin.form("/ui/kbs/handbook/sources", {"kind": "files", "config": "{not json"})
    assert broken.status_code == 400 and "not valid JSON" in broken.text


def test_without_auth_anyone_signs_in_as_admin_with_an_empty_key(console):
    from fastapi.testclient import TestClient

    from kadapt.api import create_app

    app = create_app(console.settings.model_copy(update={"auth_disabled": True}))
    with TestClient(app, base_url="http://testserver", follow_redirects=False) as client:
        token = login_form(client)
        response = client.post("/ui/login", data={"csrf_token": token, "api_key": ""})
        assert response.status_code == 303 and response.headers["location"] == "/ui/"
        page = client.get("/ui/keys")
        assert page.status_code == 200 and "anonymous (auth disabled)" in page.text


def test_an_editor_who_only_reads_a_kb_sees_no_source_config(console, sessions):
    names = _fresh_kb(console)
    page = sessions["editor_reader"].client.get(f"/ui/kbs/{names['kb']}", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "shown to the KB's managers only" in page.text and names["docs"] not in page.text
    managed = sessions["editor_owner"].client.get(f"/ui/kbs/{names['kb']}", headers={"Accept": "text/html"})
    assert managed.status_code == 200 and names["docs"] in managed.text


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"cfg.files.path": "/etc"}, "allowed"),
        ({"cfg.git.url": "--upload-pack=touch /tmp/pwned"}, "url"),
        ({"cfg.git.url": "ext::sh -c touch% /tmp/pwned"}, "url"),
        ({"cfg.web.url": "http://169.254.169.254/latest/meta-data/"}, "address"),
    ],
)
def test_a_source_form_s_generated_fields_meet_the_connectors_checks(console, sessions, fields, words):
    """The console's schema-generated source fields reach the same checks as the API: each attack is refused
    with a message that names the problem, and no source is stored."""
    from kadapt.kbs import list_sources

    names = _fresh_kb(console)
    kind = next(iter(fields)).split(".")[1]
    before = len(list_sources(console.catalog, names["kb"]))
    form = {"kind": kind, f"cfg.{kind}._shown": "1"} | fields
    response = sessions["admin"].form(f"/ui/kbs/{names['kb']}/sources", form, headers={"Accept": "text/html"})
    assert response.status_code in (400, 403), response.text[:500]
    assert words in _message(response).lower(), _message(response)
    assert len(list_sources(console.catalog, names["kb"])) == before
