"""Every route × role × KB membership, with the expected status; keys are stored hashed."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from bench import fuzz
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.access import fill, guarded_kb
from tests.conftest import PRINCIPALS, issue_keys, kadapt_settings

# (method, path, body) -> expected status per principal; "anonymous" and "bad_key" always get 401
CHAT = {"model": "{kb}", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
ROUTES = [
    ("GET", "/healthz", None, dict.fromkeys(PRINCIPALS, 200) | {"anonymous": 200, "bad_key": 200}),
    ("GET", "/v1/models", None, dict.fromkeys(PRINCIPALS, 200)),
    (
        "POST",
        "/v1/chat/completions",
        CHAT,
        {
            "admin": 200,
            "editor_owner": 200,
            "editor_other": 404,
            "reader_member": 200,
            "reader_other": 404,
            "editor_reader": 200,
        },
    ),
    (
        "GET",
        "/v1/kbs",
        None,
        {
            "admin": 200,
            "editor_owner": 200,
            "editor_other": 200,
            "reader_member": 403,
            "reader_other": 403,
            "editor_reader": 200,
        },
    ),
    (
        "POST",
        "/v1/kbs",
        {"slug": "new-{kb}"},
        {
            "admin": 201,
            "editor_owner": 201,
            "editor_other": 201,
            "reader_member": 403,
            "reader_other": 403,
            "editor_reader": 201,
        },
    ),
    (
        "GET",
        "/v1/kbs/{kb}",
        None,
        {
            "admin": 200,
            "editor_owner": 200,
            "editor_other": 404,
            "reader_member": 403,
            "reader_other": 403,
            "editor_reader": 200,
        },
    ),
    (
        "DELETE",
        "/v1/kbs/{kb}",
        None,
        {
            "admin": 204,
            "editor_owner": 204,
            "editor_other": 404,
            "reader_member": 403,
            "reader_other": 403,
            "editor_reader": 403,
        },
    ),
    (
        "GET",
        "/v1/kbs/{kb}/sources",
        None,
        {
            "admin": 200,
            "editor_owner": 200,
            "editor_other": 404,
            "reader_member": 403,
            "reader_other": 403,
            "editor_reader": 403,
        },
    ),
    (
        "POST",
        "/v1/kbs/{kb}/sources",
        {"kind": "files", "config": {"path": "{docs}"}},
        {
            "admin": 201,
            "editor_owner": 201,
            "editor_other": 404,
            "reader_member": 403,
            "reader_other": 403,
            "editor_reader": 403,
        },
    ),
    (
        "PATCH",
        "/v1/kbs/{kb}/sources/{source}",
        {"schedule": "0 3 * * *"},
        {
            "admin": 200,
            "editor_owner": 200,
            "editor_other": 404,
            "reader_member": 403,
            "reader_other": 403,
            "editor_reader": 403,
        },
    ),
    (
        "DELETE",
        "/v1/kbs/{kb}/sources/{source}",
        None,
        {
            "admin": 204,
            "editor_owner": 204,
            "editor_other": 404,
            "reader_member": 403,
            "reader_other": 403,
            "editor_reader": 403,
        },
    ),
    (
        "POST",
        "/v1/kbs/{kb}/sync",
        None,
        {
            "admin": 202,
            "editor_owner": 202,
            "editor_other": 404,
            "reader_member": 403,
            "reader_other": 403,
            "editor_reader": 403,
        },
    ),
    (
        "POST",
        "/v1/sources/{source}/notify",
        None,
        {
            "admin": 202,
            "editor_owner": 202,
            "editor_other": 404,
            "reader_member": 403,
            "reader_other": 403,
            "editor_reader": 403,
        },
    ),
    (
        "GET",
        "/v1/kbs/{kb}/search?q=leave",
        None,
        {
            "admin": 200,
            "editor_owner": 200,
            "editor_other": 404,
            "reader_member": 200,
            "reader_other": 404,
            "editor_reader": 200,
        },
    ),
    (
        "POST",
        "/v1/kbs/{kb}/augment",
        {"augmenters": ["sentence-split"]},
        {
            "admin": 202,
            "editor_owner": 202,
            "editor_other": 404,
            "reader_member": 403,
            "reader_other": 403,
            "editor_reader": 403,
        },
    ),
    (
        "POST",
        "/v1/kbs/{kb}/train",
        {"mode": "ft", "epochs": 1},
        {
            "admin": 202,
            "editor_owner": 202,
            "editor_other": 404,
            "reader_member": 403,
            "reader_other": 403,
            "editor_reader": 403,
        },
    ),
    (
        "GET",
        "/v1/kbs/{kb}/adapters",
        None,
        {
            "admin": 200,
            "editor_owner": 200,
            "editor_other": 404,
            "reader_member": 403,
            "reader_other": 403,
            "editor_reader": 200,
        },
    ),
    (
        "PUT",
        "/v1/kbs/{kb}/mode",
        {"mode": "icl"},
        {
            "admin": 200,
            "editor_owner": 200,
            "editor_other": 404,
            "reader_member": 403,
            "reader_other": 403,
            "editor_reader": 403,
        },
    ),
    (
        "POST",
        "/v1/kbs/{kb}/adapt",
        {"sample_size": 1, "epochs": 1},
        {
            "admin": 202,
            "editor_owner": 202,
            "editor_other": 404,
            "reader_member": 403,
            "reader_other": 403,
            "editor_reader": 403,
        },
    ),
    (
        "POST",
        "/v1/kbs/{kb}/evaluate",
        {"sample_size": 1, "epochs": 1},
        {
            "admin": 202,
            "editor_owner": 202,
            "editor_other": 404,
            "reader_member": 403,
            "reader_other": 403,
            "editor_reader": 403,
        },
    ),
    (
        "PUT",
        "/v1/kbs/{kb}/workload",
        {"queries_per_day": 10},
        {
            "admin": 200,
            "editor_owner": 200,
            "editor_other": 404,
            "reader_member": 403,
            "reader_other": 403,
            "editor_reader": 403,
        },
    ),
    (
        "GET",
        "/v1/kbs/{kb}/decision",
        None,
        {
            "admin": 200,
            "editor_owner": 200,
            "editor_other": 404,
            "reader_member": 200,
            "reader_other": 404,
            "editor_reader": 200,
        },
    ),
    (
        "GET",
        "/v1/kbs/{kb}/report",
        None,
        {
            "admin": 200,
            "editor_owner": 200,
            "editor_other": 404,
            "reader_member": 200,
            "reader_other": 404,
            "editor_reader": 200,
        },
    ),
    (
        "GET",
        "/reports/{kb}",
        None,
        {
            "admin": 200,
            "editor_owner": 200,
            "editor_other": 404,
            "reader_member": 200,
            "reader_other": 404,
            "editor_reader": 200,
        },
    ),
    (
        "GET",
        "/v1/jobs",
        None,
        {
            "admin": 200,
            "editor_owner": 200,
            "editor_other": 200,
            "reader_member": 403,
            "reader_other": 403,
            "editor_reader": 200,
        },
    ),
    (
        "GET",
        "/v1/jobs/{job}",
        None,
        {
            "admin": 200,
            "editor_owner": 200,
            "editor_other": 404,
            "reader_member": 403,
            "reader_other": 403,
            "editor_reader": 200,
        },
    ),
    (
        "POST",
        "/v1/jobs/{job}/cancel",
        None,
        {
            "admin": 200,
            "editor_owner": 200,
            "editor_other": 404,
            "reader_member": 403,
            "reader_other": 403,
            "editor_reader": 403,
        },
    ),
    (
        "GET",
        "/v1/audit?kb={kb}",
        None,
        {
            "admin": 200,
            "editor_owner": 403,
            "editor_other": 403,
            "reader_member": 403,
            "reader_other": 403,
            "editor_reader": 403,
        },
    ),
]
CELLS = [
    (method, path, body, principal, expected.get(principal, 401))
    for method, path, body, expected in ROUTES
    for principal in [*PRINCIPALS, "anonymous", "bad_key"]
]


@pytest.fixture(scope="module")
def app_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth")
    (root / "docs").mkdir()
    (root / "docs" / "leave.md").write_text("# Leave\n\nEmployees get 27 days of leave.\n")
    # the matrix sends a wrong key once per route, and submits jobs that it leaves queued (the routes' answers,
    # not the jobs, are under test here): throttling and the concurrent-job limit have their own tests
    # (tests/security, tests/limit_checks)
    with kadapt_settings(root, KADAPT_JOB_RUNNER=fuzz.HELD_RUNNER, **fuzz.FUZZ_SETTINGS):
        undo = fuzz.held_jobs()
        from kadapt.api import create_app
        from kadapt.catalog import open_catalog
        from kadapt.settings import get_settings

        settings = get_settings()
        catalog = open_catalog(settings)
        keys = issue_keys(catalog, settings, PRINCIPALS)
        keys["bad_key"] = keys["admin"][:-4] + "AAAA"
        try:
            with TestClient(create_app(settings), raise_server_exceptions=False) as client:
                yield client, catalog, settings, keys, root
        finally:
            undo()


def test_every_route_is_in_the_matrix(app_env):
    client = app_env[0]
    declared = {
        (
            method,
            path.split("?")[0]
            .replace("{source}", "{source_id}")
            .replace("{job}", "{job_id}")
            .replace("{kb}", "{slug}"),
        )
        for method, path, _, _ in ROUTES
    }
    paths = client.app.openapi()["paths"]
    served = {(method.upper(), path) for path, operations in paths.items() for method in operations}
    assert served == declared


def test_every_json_answer_has_its_shape_in_the_schema(app_env):
    """The OpenAPI schema names what each route answers (kadapt.views), not a bare object: a client generated
    from it gets typed KBs, sources, jobs, adapters, decisions and audit pages."""
    schema = app_env[0].app.openapi()
    untyped = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            ok = {code: answer for code, answer in operation["responses"].items() if code.startswith("2")}
            for code, answer in ok.items():
                body = (answer.get("content") or {}).get("application/json", {}).get("schema")
                if code == "204" or body is None or path.startswith(("/v1/chat", "/v1/models", "/healthz")):
                    continue
                if path == "/v1/kbs/{slug}/search":
                    continue  # search hits
                named = body.get("$ref") or (body.get("items") or {}).get("$ref")
                if not named:
                    untyped.append(f"{method.upper()} {path} {code}: {body}")
    assert not untyped, untyped
    views = schema["components"]["schemas"]
    names = {"KBView", "KBWithStatus", "SourceView", "JobView", "AdapterView", "DecisionView", "AuditPage", "Report"}
    assert names <= set(views)
    assert views["JobView"]["properties"]["progress"]["$ref"].endswith("/JobProgress")


_counter = iter(range(10_000))


def _fresh_kb(catalog, settings, root):
    """A KB (read by staff, owned by hr) with a source, a job and a decision, so every route has a target."""
    return guarded_kb(catalog, settings, f"kb{next(_counter)}", root / "docs")


@pytest.mark.parametrize(
    ("method", "path", "body", "principal", "expected"), CELLS, ids=[f"{m} {p} as {who}" for m, p, _, who, _ in CELLS]
)
def test_auth_matrix(app_env, method, path, body, principal, expected):
    client, catalog, settings, keys, root = app_env
    names = _fresh_kb(catalog, settings, root)
    headers = {} if principal == "anonymous" else {"Authorization": f"Bearer {keys[principal]}"}
    response = client.request(method, fill(path, names), json=fill(body, names), headers=headers)
    assert response.status_code == expected, response.text
    if expected >= 400:
        error = response.json()["error"]
        assert error["message"] and error["type"]
    if expected == 404:  # a hidden KB is indistinguishable from a KB that does not exist
        ghost = names | {"kb": "no-such-kb"}
        other = client.request(method, fill(path, ghost), json=fill(body, ghost), headers=headers)
        assert other.status_code == 404
        assert (
            other.json()["error"]["message"].replace("no-such-kb", names["kb"]) == response.json()["error"]["message"]
        )


def test_reader_never_sees_other_groups_kbs_in_listings(app_env):
    client, catalog, settings, keys, root = app_env
    names = _fresh_kb(catalog, settings, root)
    listed = client.get("/v1/models", headers={"Authorization": f"Bearer {keys['reader_other']}"}).json()
    assert names["kb"] not in [model["id"] for model in listed["data"]]
    listed = client.get("/v1/models", headers={"Authorization": f"Bearer {keys['reader_member']}"}).json()
    assert names["kb"] in [model["id"] for model in listed["data"]]


def test_keys_are_stored_hashed(app_env):
    _, catalog, settings, keys, _ = app_env
    from kadapt.auth import server_secret
    from kadapt.catalog import ApiKey

    with catalog.session() as session:
        rows = list(session.scalars(select(ApiKey)))
    stored = " ".join(f"{row.prefix} {row.key_hash} {row.name}" for row in rows)
    for name, key in keys.items():
        if name == "bad_key":
            continue
        assert key not in stored and key.split("_", 2)[2] not in stored
        row = next(row for row in rows if row.prefix == key.split("_")[1])
        assert row.key_hash == hmac.new(server_secret(settings), key.encode(), hashlib.sha256).hexdigest()


def test_revoked_key_is_refused(app_env):
    client, catalog, settings, _, _ = app_env
    from kadapt.auth import create_key, revoke_key

    key, row = create_key(catalog, settings, role="admin", groups=[])
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    revoke_key(catalog, row.id)
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 401
