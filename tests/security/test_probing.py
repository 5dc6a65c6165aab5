"""A caller of another group probing a KB through every route, API and console: every answer is exactly the one a
KB that does not exist gets (404 where the caller's role may use the route at all), never a success, and no
listing names the KB.

The routes are not listed by hand: they come from ``app.openapi()`` and from every console router, so a new
route is probed as soon as it exists. The request bodies are those of the role matrices
(tests/api/test_auth.py, tests/web/test_security.py); a route missing from them fails here.
"""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

from tests.access import fill, guarded_kb
from tests.api.test_auth import ROUTES as API_MATRIX
from tests.security.conftest import console_routes, signed_in
from tests.web.test_security import ROUTES as CONSOLE_MATRIX

GHOST = "no-such-kb"
GHOST_JOB = "0" * 32
PROBERS = ("reader_other", "editor_other")  # readers of "sales", editors of "eng"; the KB is staff's and hr's
MEMBER = {"reader_other": "reader_member", "editor_other": "editor_owner"}  # same role, in the KB's groups
ALERT = re.compile(r'role="alert">([^<]*)<')
PLACEHOLDERS = {
    "{source}": "{source_id}",
    "{job}": "{job_id}",
    "{kb}": "{slug}",
    "{document}": "{document_id}",
    "{key}": "{key_id}",
}


def _template(path: str) -> str:
    path = path.split("?")[0]
    for short, long in PLACEHOLDERS.items():
        path = path.replace(short, long)
    return path.replace("/kbs/handbook/", "/kbs/{slug}/")


API_CASES = {(method, _template(path)): (path, body, expected) for method, path, body, expected in API_MATRIX}
CONSOLE_CASES = {(method, _template(path)): (path, body, expected) for method, path, body, expected in CONSOLE_MATRIX}


@pytest.fixture(scope="module")
def target(env):
    """A synced KB of staff (readers) and hr (owners), with a source, a job and a document; and an app."""
    from sqlalchemy import select

    from kadapt.catalog import Document
    from kadapt.kbs import get_kb
    from kadapt.sync import sync_kb

    names = guarded_kb(env.catalog, env.settings, "probed", env.docs)
    sync_kb(env.catalog, "probed")
    with env.catalog.session() as session:
        names["document"] = session.scalar(
            select(Document.id).where(Document.kb_id == get_kb(env.catalog, "probed").id)
        )
    with env.client() as client:
        yield client, names


def _api_request(client: TestClient, env, who: str, method: str, path: str, body, names: dict[str, str]):
    return client.request(method, fill(path, names), json=fill(body, names), headers=env.headers(who))


@pytest.mark.parametrize("who", PROBERS)
def test_every_api_route_answers_as_if_the_kb_did_not_exist(env, target, who):
    client, names = target
    ghost = names | {"kb": GHOST, "job": GHOST_JOB}
    probed = 0
    for path_template, operations in client.app.openapi()["paths"].items():
        for method in operations:
            case = API_CASES.get((method.upper(), path_template))
            assert case is not None, f"{method.upper()} {path_template}: add it to tests/api/test_auth.py's ROUTES"
            path, body, expected = case
            scoped = "{kb}" in path or "{job}" in path or "{kb}" in json.dumps(body)
            if not scoped or "new-{kb}" in json.dumps(body):
                continue
            probed += 1
            real = _api_request(client, env, who, method.upper(), path, body, names)
            fake = _api_request(client, env, who, method.upper(), path, body, ghost)
            where = f"{method.upper()} {path} as {who}"
            assert real.status_code >= 400, f"{where}: {real.status_code} {real.text[:300]}"
            assert real.status_code == fake.status_code, where
            message = real.json()["error"]["message"].replace(names["kb"], GHOST).replace(names["job"], GHOST_JOB)
            assert message == fake.json()["error"]["message"], where
            if expected.get(MEMBER[who], 401) < 400:  # the route is open to the role: only the KB is hidden
                assert real.status_code == 404, where
    assert probed >= 20


def test_listings_never_name_the_kb(env, target):
    client, names = target
    models = client.get("/v1/models", headers=env.headers("reader_other")).json()
    assert names["kb"] not in [model["id"] for model in models["data"]]
    kbs = client.get("/v1/kbs", headers=env.headers("editor_other")).json()
    assert names["kb"] not in [kb["slug"] for kb in kbs]
    jobs = client.get("/v1/jobs", headers=env.headers("editor_other")).json()
    assert names["job"] not in json.dumps(jobs) and names["kb"] not in json.dumps(jobs)
    assert client.get("/v1/audit", headers=env.headers("editor_other")).status_code == 403


def _console_request(client: TestClient, csrf: str, method: str, path: str, body, names: dict[str, str]):
    path = fill(path, names).replace("/kbs/handbook/", f"/kbs/{names['kb']}/")
    if method == "GET":
        return client.get(path, headers={"Accept": "text/html"})
    body = fill(body, names) or {}
    if "messages" in body:
        return client.post(path, json=body, headers={"X-CSRF-Token": csrf})
    return client.post(path, data={"csrf_token": csrf} | body, headers={"Accept": "text/html"})


def _page_message(response) -> str:
    if response.headers["content-type"].startswith("application/json"):
        return response.json()["error"]["message"]
    return ALERT.search(response.text).group(1)


@pytest.mark.parametrize("who", PROBERS)
def test_every_console_route_answers_as_if_the_kb_did_not_exist(env, target, who):
    _, names = target
    ghost = names | {"kb": GHOST, "job": GHOST_JOB}
    client, csrf = signed_in(env, who)
    probed = 0
    with client:
        assert names["kb"] not in client.get("/ui/chat").text  # the chat page offers only readable KBs
        for method, path_template in console_routes():
            case = CONSOLE_CASES.get((method, path_template))
            if case is None and "{slug}" not in path_template and "{job_id}" not in path_template:
                continue  # names no KB (sign-in, the key pages)
            assert case is not None, f"{method} {path_template}: add it to tests/web/test_security.py's ROUTES"
            path, body, expected = case
            scoped = "{slug}" in path_template or "{job_id}" in path_template or "{kb}" in json.dumps(body)
            if not scoped or "new-{kb}" in json.dumps(body):
                continue
            probed += 1
            real = _console_request(client, csrf, method, path, body, names)
            fake = _console_request(client, csrf, method, path, body, ghost)
            where = f"{method} {path_template} as {who}"
            assert real.status_code >= 400, f"{where}: {real.status_code} {real.text[:300]}"
            assert real.status_code == fake.status_code, where
            assert _page_message(real).replace(names["kb"], GHOST).replace(names["job"], GHOST_JOB) == _page_message(
                fake
            ), where
            if expected.get(MEMBER[who], 401) < 400:
                assert real.status_code == 404, where
    assert probed >= 12
