"""Company sign-in for the console: OpenID Connect, authorization code flow with PKCE, through Authlib (the
authorization request and the code exchange) and joserfc (the ID token's signature and claims).

Set ``KADAPT_OIDC_ISSUER``, ``KADAPT_OIDC_CLIENT_ID`` (and the secret, for a confidential client) and the sign-in
page offers "Sign in with <KADAPT_OIDC_LABEL>" beside the API key form. The flow:

1. ``GET /ui/oidc/start`` reads the provider's discovery document (its issuer must be the configured one), makes a
   state, a nonce and a PKCE verifier, keeps them in a short-lived signed cookie, and sends the browser to the
   provider's authorization endpoint.
2. ``GET /ui/oidc/callback`` checks the state against that cookie, exchanges the code (with the verifier) at the
   token endpoint, and accepts the ID token only when its signature verifies against the provider's published keys
   (asymmetric algorithms only) and its issuer, audience, expiry and nonce are right. The user's groups come from
   the ``KADAPT_OIDC_GROUPS_CLAIM`` claim (ID token, else userinfo), mapped to kadapt groups
   (``KADAPT_OIDC_GROUP_MAP``) and a role (``KADAPT_OIDC_ROLES``; a reader otherwise). A console session for that
   user follows; a later sign-in reads their groups again.

API keys stay for programs: the JSON API never accepts a console session.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import threading
import time
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from kadapt.errors import InvalidInput, KadaptError, NotFound
from kadapt.settings import Settings
from kadapt.web.render import PREFIX, PageRoute, render, safe_next
from kadapt.web.session import company_sign_in_config, new_session, set_cookie, sign, signing_key, unsign

__all__ = ["id_token_claims", "map_groups", "oidc_enabled", "provider", "router", "sign_in_choice"]

log = logging.getLogger("kadapt.oidc")
router = APIRouter(route_class=PageRoute)

STATE_COOKIE = "kadapt_oidc"
STATE_SECONDS = 600  # a sign-in at the provider must finish within this
DISCOVERY_SECONDS = 600  # how long the provider's discovery document and keys are kept
FAILURE_SECONDS = 30  # how long a failure to read them is, before the next try
TIMEOUT = 5.0  # seconds for each of connect, read, write and pool
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
MAX_GROUPS = 200


class SignInFailed(KadaptError):
    status_code = 401
    code = "sign_in_failed"


def oidc_enabled(settings: Settings) -> bool:
    return bool(settings.oidc_issuer and settings.oidc_client_id)


def _check_url(url: str, what: str) -> str:
    """An https URL, or http on a loopback address (a provider on this machine); no credentials or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise InvalidInput(f"{what} must be an https URL (http only on a loopback address): {url!r}")
    if parts.username or parts.password or parts.fragment:
        raise InvalidInput(f"{what} must hold no credentials and no fragment: {url!r}")
    return url


@dataclass(frozen=True)
class Provider:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None


_cache: dict[str, tuple[float, Any]] = {}
_cache_lock = threading.Lock()
_loading: dict[str, threading.Lock] = {}


def _fetch_json(url: str, what: str) -> dict[str, Any]:
    try:
        response = httpx.get(_check_url(url, what), timeout=TIMEOUT, follow_redirects=False)
        response.raise_for_status()
        data = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise SignInFailed(f"the identity provider's {what} could not be read ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise SignInFailed(f"the identity provider's {what} is not a JSON object")
    return data


def _cached(key: str, load):
    """``load()``'s value, kept DISCOVERY_SECONDS; a failure is kept FAILURE_SECONDS, so that a provider that is
    down or slow does not hold a server thread per sign-in attempt. One load at a time per key."""
    with _cache_lock:
        lock = _loading.setdefault(key, threading.Lock())
    with lock:
        with _cache_lock:
            hit = _cache.get(key)
        if hit and hit[0] > time.monotonic():
            if isinstance(hit[1], SignInFailed):
                raise hit[1]
            return hit[1]
        try:
            value = load()
        except SignInFailed as exc:
            with _cache_lock:
                _cache[key] = (time.monotonic() + FAILURE_SECONDS, exc)
            raise
        with _cache_lock:
            _cache[key] = (time.monotonic() + DISCOVERY_SECONDS, value)
        return value


def provider(settings: Settings) -> Provider:
    """The provider's endpoints from its discovery document, whose issuer must be exactly the configured one."""
    issuer = _check_url(settings.oidc_issuer.rstrip("/"), "KADAPT_OIDC_ISSUER")

    def load() -> Provider:
        document = _fetch_json(issuer + "/.well-known/openid-configuration", "discovery document")
        if str(document.get("issuer", "")).rstrip("/") != issuer:
            raise SignInFailed(f"the discovery document names issuer {document.get('issuer')!r}, not {issuer!r}")
        try:
            endpoints = {
                name: _check_url(str(document[name]), name)
                for name in ("authorization_endpoint", "token_endpoint", "jwks_uri")
            }
        except KeyError as exc:
            raise SignInFailed(f"the discovery document has no {exc.args[0]}") from None
        userinfo = document.get("userinfo_endpoint")
        userinfo = _check_url(str(userinfo), "userinfo_endpoint") if userinfo else None
        return Provider(issuer=document["issuer"], userinfo_endpoint=userinfo, **endpoints)

    return _cached("provider:" + issuer, load)


def _keys(found: Provider, *, fresh: bool = False):
    from joserfc.jwk import KeySet

    if fresh:
        with _cache_lock:
            _cache.pop("jwks:" + found.jwks_uri, None)
    return _cached("jwks:" + found.jwks_uri, lambda: KeySet.import_key_set(_fetch_json(found.jwks_uri, "keys")))


def id_token_claims(token: str, found: Provider, client_id: str, nonce: str) -> dict[str, Any]:
    """The ID token's claims once its signature (the provider's published keys; keys fetched again once for an
    unknown key id, as after a rotation) and its issuer, audience, expiry and nonce check out."""
    from joserfc import jwt
    from joserfc.errors import JoseError

    try:
        try:
            decoded = jwt.decode(token, _keys(found), algorithms=ALGORITHMS)
        except JoseError:
            decoded = jwt.decode(token, _keys(found, fresh=True), algorithms=ALGORITHMS)
        jwt.JWTClaimsRegistry(
            leeway=60,
            iss={"essential": True, "value": found.issuer},
            aud={"essential": True, "value": client_id},
            exp={"essential": True},
            sub={"essential": True},
            nonce={"essential": True, "value": nonce},
        ).validate(decoded.claims)
    except (JoseError, ValueError) as exc:
        raise SignInFailed(f"the identity provider's ID token was refused ({exc})") from None
    audiences = decoded.claims["aud"] if isinstance(decoded.claims["aud"], list) else [decoded.claims["aud"]]
    if len(audiences) > 1 and decoded.claims.get("azp") != client_id:  # OpenID Connect Core 3.1.3.7, items 4-5
        raise SignInFailed("the identity provider's ID token names other audiences and was not issued to kadapt")
    return decoded.claims


def map_groups(provider_groups: Any, settings: Settings) -> tuple[str, list[str]]:
    """(role, kadapt groups) for a user in ``provider_groups``: the most powerful role any of them is given
    (KADAPT_OIDC_ROLES; reader otherwise), and their groups through KADAPT_OIDC_GROUP_MAP (as they are, unset)."""
    if isinstance(provider_groups, str):
        provider_groups = [provider_groups]
    names = [str(group) for group in provider_groups or [] if isinstance(group, str | int)][:MAX_GROUPS]
    roles = {settings.oidc_roles.get(name) for name in names}
    role = "admin" if "admin" in roles else "editor" if "editor" in roles else "reader"
    if settings.oidc_group_map is None:
        groups = names
    else:
        groups = [mapped for name in names for mapped in settings.oidc_group_map.get(name, [])]
    return role, sorted(set(groups))


# -- the short-lived cookie that carries the flow's state from /start to /callback ---------------------------


def _state_key(settings: Settings) -> bytes:
    return hmac.new(signing_key(settings), b"kadapt oidc state v1", hashlib.sha256).digest()


def _encode_state(settings: Settings, values: dict[str, Any]) -> str:
    return sign(_state_key(settings), values)


def _decode_state(settings: Settings, value: str | None) -> dict[str, Any] | None:
    values = unsign(_state_key(settings), value)
    return values if values is not None and values.get("expires", 0) > time.time() else None


def _redirect_uri(request: Request, settings: Settings) -> str:
    if settings.oidc_redirect_url:
        return _check_url(settings.oidc_redirect_url, "KADAPT_OIDC_REDIRECT_URL")
    return str(request.url_for("oidc_callback"))


def _client(settings: Settings, redirect_uri: str):
    from authlib.integrations.httpx_client import OAuth2Client

    secret = settings.oidc_client_secret.get_secret_value() if settings.oidc_client_secret else None
    return OAuth2Client(
        client_id=settings.oidc_client_id,
        client_secret=secret,
        token_endpoint_auth_method="client_secret_basic" if secret else "none",
        scope=settings.oidc_scopes,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        timeout=TIMEOUT,
        follow_redirects=False,
    )


def _settings(request: Request) -> Settings:
    settings = request.app.state.settings
    if not oidc_enabled(settings):
        raise NotFound("company sign-in is not configured (KADAPT_OIDC_ISSUER, KADAPT_OIDC_CLIENT_ID)")
    return settings


@router.get("/oidc/start")
def start(request: Request, next: str | None = None) -> Response:
    """Send the browser to the company identity provider to sign in."""
    settings = _settings(request)
    found = provider(settings)
    state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
    redirect_uri = _redirect_uri(request, settings)
    with _client(settings, redirect_uri) as client:
        url, _ = client.create_authorization_url(
            found.authorization_endpoint, state=state, code_verifier=verifier, nonce=nonce
        )
    values = {"state": state, "nonce": nonce, "verifier": verifier, "redirect_uri": redirect_uri}
    values |= {"next": safe_next(next, f"{PREFIX}/"), "expires": int(time.time()) + STATE_SECONDS}
    response = RedirectResponse(url, status_code=303)
    # Lax: the provider sends the browser back with a top-level GET from its own site
    response.set_cookie(
        STATE_COOKIE,
        _encode_state(settings, values),
        max_age=STATE_SECONDS,
        path=f"{PREFIX}/oidc",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https" or settings.secure_cookies == "always",
    )
    return response


def _failed(request: Request, message: str, status: int = 401) -> Response:
    response = render(request, "login.html.j2", status=status, error=message, csrf=None, oidc_label=None)
    response.delete_cookie(STATE_COOKIE, path=f"{PREFIX}/oidc")
    return response


def _user_claims(client, found: Provider, claims: dict[str, Any], claim: str) -> Any:
    """The groups claim: from the ID token, else from userinfo (whose subject must be the token's)."""
    if claim in claims or not found.userinfo_endpoint:
        return claims.get(claim)
    response = client.get(found.userinfo_endpoint)
    info = response.json() if response.status_code == 200 else {}
    if not isinstance(info, dict) or info.get("sub") != claims["sub"]:
        raise SignInFailed("the identity provider's userinfo does not match the signed-in user")
    return info.get(claim)


@router.get("/oidc/callback", name="oidc_callback")
def callback(request: Request, code: str | None = None, state: str | None = None, error: str | None = None) -> Response:
    """Where the identity provider sends the browser back: check, exchange, validate, sign in."""
    settings = _settings(request)
    flow = _decode_state(settings, request.cookies.get(STATE_COOKIE))
    if flow is None:
        return _failed(request, "The sign-in took too long or was started in another browser; try again.", 400)
    if error:
        return _failed(request, f"The identity provider did not sign you in ({error[:100]}).")
    if not code or not state or not hmac.compare_digest(state.encode(), str(flow["state"]).encode()):
        return _failed(request, "The sign-in's state does not match; start again from the sign-in page.", 400)
    try:
        found = provider(settings)
        with _client(settings, flow["redirect_uri"]) as client:
            token = client.fetch_token(found.token_endpoint, code=code, code_verifier=flow["verifier"])
            claims = id_token_claims(token.get("id_token", ""), found, settings.oidc_client_id, flow["nonce"])
            provider_groups = _user_claims(client, found, claims, settings.oidc_groups_claim)
    except SignInFailed as exc:
        log.warning("company sign-in refused: %s", exc.message)
        return _failed(request, exc.message)
    except Exception as exc:  # the code exchange: Authlib's OAuth errors and httpx's
        log.warning("company sign-in failed at the token endpoint: %s", exc)
        return _failed(request, "The identity provider did not accept the sign-in code; try again.")
    return _signed_in(request, settings, found, claims, provider_groups, flow["next"])


def _signed_in(request: Request, settings: Settings, found: Provider, claims, provider_groups, target: str):
    from kadapt.audit import record

    role, groups = map_groups(provider_groups, settings)
    subject = f"{found.issuer.rstrip('/')}|{claims['sub']}"
    name = str(claims.get("email") or claims.get("name") or claims.get("preferred_username") or claims["sub"])[:200]
    session = replace(
        new_session(settings, signed_in=True), subject=subject, name=name, role=role, groups=tuple(groups)
    )
    session = replace(session, oidc_config=company_sign_in_config(settings))
    record(
        request.app.state.catalog,
        actor=f"oidc:{subject}"[:200],
        actor_name=name,
        action="console.sign-in",
        outcome="ok",
        via="console",
        client=request.client.host if request.client else "",
        detail=f"company sign-in as {role}, groups {','.join(groups) or 'none'}",
    )
    # a page, not a redirect: the session cookie is SameSite=Strict, and a redirect that began at the provider's
    # site would not send it; this page's own navigation is same-site
    response = render(request, "oidc_done.html.j2", target=safe_next(target, f"{PREFIX}/"), csrf=None)
    set_cookie(response, request, settings, session)
    response.delete_cookie(STATE_COOKIE, path=f"{PREFIX}/oidc")
    return response


def sign_in_choice(settings: Settings) -> str | None:
    """What the sign-in page's company button says, or None when company sign-in is off."""
    return settings.oidc_label if oidc_enabled(settings) else None
