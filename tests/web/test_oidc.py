"""Company sign-in against a real OpenID Connect provider (node-oidc-provider from npm) on 127.0.0.1: employees
sign in with their company account in Chromium, their groups at the provider become kadapt groups and a role, and
a user whose groups change between two sign-ins sees what the new groups allow. The ID token checks (signature,
issuer, audience, nonce, expiry, algorithm) against tokens signed here; and the flow's state against forgery."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import PRINCIPALS, REPO, free_port, handbook_server

PROVIDER_SCRIPT = Path(__file__).with_name("oidc_provider.mjs")


@dataclass
class Company:
    url: str  # the console
    issuer: str
    users: Path  # the provider's users: name -> {groups}
    catalog: object

    def set_groups(self, user: str, groups: list[str]) -> None:
        users = json.loads(self.users.read_text())
        users[user] = users.get(user, {}) | {"groups": groups}
        self.users.write_text(json.dumps(users))


def _start_provider(port: int, users: Path, redirect_uri: str, log: Path) -> subprocess.Popen:
    node = shutil.which("node")
    if node is None or not (REPO / "deploy" / "node_modules" / "oidc-provider").exists():
        pytest.fail("node and oidc-provider are needed: run `npm ci --prefix deploy` (make install does)")
    process = subprocess.Popen(  # noqa: S603 (fixed arguments)
        [node, str(PROVIDER_SCRIPT), str(port), str(users), redirect_uri],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/.well-known/openid-configuration", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the OIDC provider did not start: {log.read_text()}")


@pytest.fixture(scope="module")
def company(tmp_path_factory) -> Iterator[Company]:
    root = tmp_path_factory.mktemp("company")
    users = root / "users.json"
    users.write_text(
        json.dumps({"alice": {"name": "Alice", "groups": ["Staff"]}, "bob": {"groups": ["KB-Editors", "HR"]}})
    )
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    settings = {
        "KADAPT_OIDC_ISSUER": issuer,
        "KADAPT_OIDC_CLIENT_ID": "kadapt",
        "KADAPT_OIDC_CLIENT_SECRET": "kadapt-test-secret",
        "KADAPT_OIDC_GROUP_MAP": json.dumps({"Staff": ["staff"], "HR": ["hr"]}),
        "KADAPT_OIDC_ROLES": json.dumps({"KB-Editors": "editor"}),
    }
    with handbook_server(root, PRINCIPALS, settings=settings) as server:
        provider = _start_provider(port, users, f"{server.url}/ui/oidc/callback", root / "provider.log")
        try:
            yield Company(server.url, issuer, users, server.catalog)
        finally:
            provider.terminate()
            provider.wait(timeout=10)


def _loopback_only(page) -> None:
    """The provider's development pages ask for a web font from the internet: nothing leaves this machine, so such
    requests get an empty answer."""

    def route(route) -> None:
        if httpx.URL(route.request.url).host == "127.0.0.1":
            route.continue_()
        else:
            route.fulfill(status=200, body="", content_type="text/css")

    page.route("**/*", route)


def _company_sign_in(page, company: Company, user: str) -> None:
    """From kadapt's sign-in page through the provider's own pages and back."""
    _loopback_only(page)
    page.goto(company.url + "/ui/login")
    page.get_by_role("link", name="Sign in with your company account").click()
    page.wait_for_url(re.compile(re.escape(company.issuer) + r"/(interaction|auth).*|.*/ui/.*"))
    if page.url.startswith(company.issuer) and page.locator("input[name=login]").count():
        page.locator("input[name=login]").fill(user)
        page.locator("input[name=password]").fill("any password")
        page.get_by_role("button", name="Sign-in").click()
    if page.url.startswith(company.issuer) and page.get_by_role("button", name="Continue").count():
        page.get_by_role("button", name="Continue").click()
    page.wait_for_url(re.compile(re.escape(company.url) + r"/ui/(chat)?$"))


def _sign_out(page) -> None:
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/ui/login$"))


def test_an_employee_signs_in_with_the_company_account_and_their_groups_decide_what_they_read(company, open_tab):
    tab = open_tab()
    page = tab.page
    _company_sign_in(page, company, "alice")
    assert page.url == company.url + "/ui/chat"  # a reader
    assert page.locator(".who").inner_text() == "alice@example.com · reader"
    assert [event.action for event in _events(company, "alice")] == ["console.sign-in"]
    options = page.get_by_label("Knowledge base").locator("option").evaluate_all("o => o.map(x => x.value)")
    assert options == ["handbook"]  # read by staff, which the provider's Staff maps to

    # her groups change at the provider; the next sign-in reads them again
    company.set_groups("alice", ["Finance"])
    _sign_out(page)
    assert page.goto(company.url + "/ui/chat").url.startswith(company.url + "/ui/login")
    _company_sign_in(page, company, "alice")
    assert "No knowledge base is shared with your groups yet" in page.locator("main").inner_text()
    company.set_groups("alice", ["Staff"])
    assert tab.problems == []


def test_a_provider_group_can_make_an_editor_who_manages_the_kbs_of_their_groups(company, open_tab):
    tab = open_tab()
    page = tab.page
    _company_sign_in(page, company, "bob")
    assert page.url == company.url + "/ui/"
    page.goto(company.url + "/ui/kbs/handbook")  # owned by hr, which the provider's HR maps to
    assert page.get_by_role("button", name="Adapt: measure and decide").is_visible()
    assert page.get_by_role("link", name="Keys").count() == 0  # an editor, not an admin
    page.get_by_role("button", name="Set mode").click()  # icl, as it is: on record under bob's company account
    page.wait_for_url(re.compile(r".*#lifecycle$"))
    assert "kb.set-mode" in [event.action for event in _events(company, "bob")]
    assert tab.problems == []


def _events(company: Company, user: str):
    from kadapt.audit import list_events

    return list_events(company.catalog, actor=f"oidc:{company.issuer}|{user}")[0]


def test_a_callback_without_the_flow_s_cookie_or_with_another_state_signs_nobody_in(company):
    with httpx.Client(base_url=company.url, follow_redirects=False, timeout=30) as client:
        response = client.get("/ui/oidc/callback", params={"code": "x", "state": "y"})
        assert response.status_code == 400 and "started in another browser" in response.text
        start = client.get("/ui/oidc/start")
        assert start.status_code == 303 and start.headers["location"].startswith(company.issuer + "/auth?")
        location = httpx.URL(start.headers["location"])
        assert location.params["code_challenge_method"] == "S256" and location.params["nonce"]
        response = client.get("/ui/oidc/callback", params={"code": "stolen", "state": location.params["state"]})
        assert response.status_code == 401  # a code the provider never issued
        assert "did not accept the sign-in code" in response.text
        client.get("/ui/oidc/start")  # a new flow: a failed callback ends the one before
        response = client.get("/ui/oidc/callback", params={"code": "x", "state": "forged"})
        assert response.status_code == 400 and "state does not match" in response.text
        client.get("/ui/oidc/start")
        response = client.get("/ui/oidc/callback", params={"code": "x", "state": "ünïcode"})
        assert response.status_code == 400 and "state does not match" in response.text
        assert client.get("/ui/chat").status_code == 303  # still not signed in
        # where to go after signing in is a console page, never another site
        for target in ("https://evil.example/", "//evil.example/ui/", "/ui/chat"):
            client.get("/ui/oidc/start", params={"next": target})
            payload = client.cookies.get("kadapt_oidc", path="/ui/oidc").split(".")[0]
            flow = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            assert flow["next"] == ("/ui/chat" if target == "/ui/chat" else "/ui/")


# -- the ID token checks, on tokens signed here -------------------------------------------------------------


@pytest.fixture
def signer(monkeypatch):
    from joserfc.jwk import KeySet, RSAKey

    from kadapt.web import oidc

    key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    found = oidc.Provider(
        "https://id.example", "https://id.example/a", "https://id.example/t", "https://id.example/k", None
    )
    keys = KeySet([key])
    monkeypatch.setattr(oidc, "_keys", lambda provider, fresh=False: keys)
    return key, found


def _token(key, **claims) -> str:
    from joserfc import jwt

    now = int(time.time())
    base = {"iss": "https://id.example", "aud": "kadapt", "sub": "u1", "nonce": "n1", "iat": now, "exp": now + 300}
    return jwt.encode({"alg": "RS256", "kid": "k1"}, base | claims, key)


def test_an_id_token_is_accepted_only_with_the_right_signature_issuer_audience_nonce_and_expiry(signer):
    from joserfc import jwt
    from joserfc.jwk import OctKey, RSAKey

    from kadapt.web.oidc import SignInFailed, id_token_claims

    key, found = signer
    assert id_token_claims(_token(key), found, "kadapt", "n1")["sub"] == "u1"
    for bad in (
        {"iss": "https://evil.example"},
        {"aud": "another-app"},
        {"nonce": "n2"},
        {"exp": int(time.time()) - 3600},
    ):
        with pytest.raises(SignInFailed):
            id_token_claims(_token(key, **bad), found, "kadapt", "n1")
    other = RSAKey.generate_key(2048, parameters={"kid": "k1"})  # same key id, another key: a forged signature
    with pytest.raises(SignInFailed):
        id_token_claims(_token(other), found, "kadapt", "n1")
    # a token MACed with a shared secret, or not signed at all, is refused whatever its claims
    secret = OctKey.generate_key(256)
    hs256 = jwt.encode({"alg": "HS256"}, {"iss": found.issuer, "aud": "kadapt", "sub": "u1", "nonce": "n1"}, secret)
    with pytest.raises(SignInFailed):
        id_token_claims(hs256, found, "kadapt", "n1")
    # several audiences: the token must have been issued to kadapt (azp)
    assert id_token_claims(_token(key, aud=["kadapt", "other"], azp="kadapt"), found, "kadapt", "n1")
    with pytest.raises(SignInFailed):
        id_token_claims(_token(key, aud=["kadapt", "other"], azp="other"), found, "kadapt", "n1")
    header, payload, _ = _token(key).split(".")
    with pytest.raises(SignInFailed):
        id_token_claims(f"{header}.{payload}.", found, "kadapt", "n1")


def test_provider_groups_map_to_kadapt_groups_and_roles(monkeypatch):
    from kadapt.settings import get_settings
    from kadapt.web.oidc import map_groups

    monkeypatch.setenv("KADAPT_OIDC_GROUP_MAP", json.dumps({"HR-Staff": ["hr", "staff"]}))
    monkeypatch.setenv("KADAPT_OIDC_ROLES", json.dumps({"IT-Admins": "admin", "KB-Editors": "editor"}))
    get_settings.cache_clear()
    settings = get_settings()
    assert map_groups(["HR-Staff", "Unmapped"], settings) == ("reader", ["hr", "staff"])
    assert map_groups(["KB-Editors", "IT-Admins"], settings) == ("admin", [])
    assert map_groups("HR-Staff", settings) == ("reader", ["hr", "staff"])  # a single group as a string
    assert map_groups(None, settings) == ("reader", [])
    monkeypatch.delenv("KADAPT_OIDC_GROUP_MAP")
    get_settings.cache_clear()
    assert map_groups(["Sales"], get_settings()) == ("reader", ["Sales"])  # no map: the provider's names
    get_settings.cache_clear()
