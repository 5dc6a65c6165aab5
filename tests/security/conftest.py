"""An in-process app over a real catalog, with a key for each kind of caller, for the security tests."""

from __future__ import annotations

import itertools
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.access import guarded_kb
from tests.conftest import PRINCIPALS, kadapt_settings


@dataclass
class Env:
    root: Path  # the only allowed root
    docs: Path  # a folder of documents under it
    settings: object
    catalog: object
    keys: dict[str, str]
    key_ids: dict[str, int]

    def app(self, **overrides):
        from kadapt.api import create_app

        return create_app(self.settings.model_copy(update=overrides))

    def client(self, *, address: str = "testclient", **overrides) -> TestClient:
        """A client of a fresh app (its own throttle) calling from ``address``."""
        return TestClient(self.app(**overrides), client=(address, 50000), raise_server_exceptions=False)

    def headers(self, principal: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[principal]}"}


@pytest.fixture(scope="package")
def env(tmp_path_factory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("security")
    docs = root / "docs"
    docs.mkdir()
    (docs / "leave.md").write_text("# Leave\n\nEmployees get 27 days of leave.\n")
    with kadapt_settings(root):
        from kadapt.auth import create_key
        from kadapt.catalog import open_catalog
        from kadapt.settings import get_settings

        settings = get_settings()
        catalog = open_catalog(settings)
        keys, key_ids = {}, {}
        for name, (role, groups) in PRINCIPALS.items():
            keys[name], row = create_key(catalog, settings, role=role, groups=groups, name=name)
            key_ids[name] = row.id
        yield Env(root, docs, settings, catalog, keys, key_ids)


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def signed_in(env: Env, who: str) -> tuple[TestClient, str]:
    """A console client signed in with ``who``'s key, and its session's CSRF token."""
    client = TestClient(env.app(), client=("testclient", 50000), follow_redirects=False)
    token = CSRF.search(client.get("/ui/login").text).group(1)
    assert client.post("/ui/login", data={"csrf_token": token, "api_key": env.keys[who]}).status_code == 303
    return client, CSRF_META.search(client.get("/ui/chat").text).group(1)


_counter = itertools.count()


@pytest.fixture
def make_kb(env) -> Callable[..., dict[str, str]]:
    """A KB read by "staff" and owned by "hr", with a files source, a queued job and a decision."""

    def make(prefix: str = "kb") -> dict[str, str]:
        return guarded_kb(env.catalog, env.settings, f"{prefix}-{next(_counter)}", env.docs)

    return make


def console_routes():
    """(method, full path) of every console route: each module of kadapt.web that has a router."""
    import importlib
    import pkgutil

    import kadapt.web
    from kadapt.web.render import PREFIX

    for info in pkgutil.iter_modules(kadapt.web.__path__):
        module = importlib.import_module(f"kadapt.web.{info.name}")
        if not hasattr(module, "router"):
            continue
        for route in module.router.routes:
            for method in sorted(getattr(route, "methods", None) or ()):
                if method != "HEAD":
                    yield method, PREFIX + route.path


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test on any attempt to connect or to resolve a name."""
    attempts: list[str] = []

    def refuse(name):
        def attempt(*args, **kwargs):
            attempts.append(f"{name}{args[1:] if name == 'connect' else args}")
            raise AssertionError(f"{name} attempted: {args!r}")

        return attempt

    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    return attempts


def rebind_dns(monkeypatch, connector_class, *, stable: tuple[str, ...] = ()) -> None:
    """``rebind.example`` answers 172.32.0.1 (public) while ``connector_class`` checks a source and 127.0.0.1
    afterwards, as a DNS server with a zero TTL can; the ``stable`` names always answer 172.32.0.1. Other names
    resolve as usual."""
    real = socket.getaddrinfo
    checking = {"now": False}

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "rebind.example" or host in stable:
            address = "172.32.0.1" if checking["now"] or host in stable else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 0))]
        return real(host, port, *args, **kwargs)

    def check(self):
        checking["now"] = True
        try:
            return real_check(self)
        finally:
            checking["now"] = False

    real_check = connector_class.check
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(connector_class, "check", check)
