"""The audit log: admin actions through the API, the console and the CLI are recorded, never with a secret, and
only admins read it."""

from __future__ import annotations

import getpass
import json
import re
import time

import click
import pytest
import typer
from sqlalchemy import select

from tests.conftest import run_kadapt
from tests.security.conftest import console_routes

ADDRESS = "192.0.2.10"


@pytest.fixture(scope="module")
def client(env):
    with env.client(address=ADDRESS) as opened:
        yield opened


def _events(client, env, **filters) -> list[dict]:
    response = client.get("/v1/audit", params=filters, headers=env.headers("admin"))
    assert response.status_code == 200, response.text
    return response.json()["data"]


def _all_rows(env) -> list[str]:
    from kadapt.catalog.models import AuditEvent

    with env.catalog.session() as session:
        return [
            " ".join(str(getattr(row, column.name)) for column in AuditEvent.__table__.columns)
            for row in session.scalars(select(AuditEvent))
        ]


def test_api_actions_are_recorded_with_who_what_and_from_where(env, client):
    admin = env.headers("admin")
    assert (
        client.post("/v1/kbs", headers=admin, json={"slug": "audited", "reader_groups": ["staff"]}).status_code == 201
    )
    added = client.post(
        "/v1/kbs/audited/sources", headers=admin, json={"kind": "files", "config": {"path": str(env.docs)}}
    )
    assert added.status_code == 201
    escaped = client.post(
        "/v1/kbs/audited/sources", headers=admin, json={"kind": "files", "config": {"path": str(env.root / "..")}}
    )
    assert escaped.status_code == 403
    mode = client.put("/v1/kbs/audited/mode", headers=admin, json={"mode": "icl"})
    assert mode.status_code == 200
    refused = client.delete("/v1/kbs/audited", headers=env.headers("editor_other"))
    assert refused.status_code == 404
    assert client.get("/v1/kbs/audited", headers=admin).status_code == 200  # reads are not recorded

    events = _events(client, env, kb="audited")
    assert [(event["action"], event["outcome"], event["status"]) for event in reversed(events)] == [
        ("kb.create", "ok", 201),
        ("source.add", "ok", 201),
        ("source.add", "denied", 403),
        ("kb.set-mode", "ok", 200),
        ("kb.delete", "failed", 404),
    ]
    create = events[-1]
    assert create["actor"] == f"key:{env.key_ids['admin']}" and create["actor_name"] == "admin"
    assert create["via"] == "api" and create["client"] == ADDRESS and create["kb"] == "audited"
    assert events[-2]["target"] == f"source {added.json()['id']}"
    assert "outside the allowed roots" in events[-3]["detail"]
    assert events[0]["actor"] == f"key:{env.key_ids['editor_other']}"


def test_a_started_job_is_named(env, client, make_kb):
    names = make_kb()
    started = client.post(f"/v1/kbs/{names['kb']}/sync", headers=env.headers("editor_owner"))
    assert started.status_code == 202
    (event,) = _events(client, env, kb=names["kb"])
    assert event["action"] == "kb.sync" and event["target"] == f"job {started.json()['id']}"
    assert event["actor_name"] == "editor_owner"
    from kadapt.jobs import TERMINAL_STATES, get_job

    deadline = time.monotonic() + 120  # let the sync finish before the catalog goes away
    while get_job(env.catalog, started.json()["id"]).state not in TERMINAL_STATES and time.monotonic() < deadline:
        time.sleep(0.2)


def test_cli_actions_are_recorded_as_the_os_user(env, client):
    created = run_kadapt("kb", "create", "from-cli", "--owners", "hr")
    assert created.returncode == 0, created.stderr
    key = run_kadapt("keys", "create", "--role", "reader", "--groups", "staff", "--name", "cli-made", "--json")
    assert key.returncode == 0, key.stderr
    refused = run_kadapt("source", "add", "from-cli", "files", "--path", "/etc")
    assert refused.returncode == 1

    events = _events(client, env, actor=f"cli:{getpass.getuser()}")
    by_action = {}
    for event in events:  # newest first: this test's own, not an earlier test's with the same env
        by_action.setdefault(event["action"], event)
    assert by_action["kb.create"]["kb"] == "from-cli" and by_action["kb.create"]["outcome"] == "ok"
    assert by_action["kb.create"]["via"] == "cli" and by_action["kb.create"]["client"] == "local"
    assert by_action["source.add"]["outcome"] == "denied" and "allowed roots" in by_action["source.add"]["detail"]
    assert "role reader" in by_action["key.create"]["detail"] and "cli-made" in by_action["key.create"]["detail"]
    new_key = json.loads(key.stdout)["key"]
    assert not any(new_key in row or new_key.split("_", 2)[2] in row for row in _all_rows(env))

    listed = run_kadapt("audit", "--kb", "from-cli", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [event["action"] for event in json.loads(listed.stdout)["data"]] == ["source.add", "kb.create"]


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def test_console_actions_are_recorded(env):
    with env.client(address="192.0.2.11") as console:
        token = CSRF.search(console.get("/ui/login").text).group(1)
        signed_in = console.post(
            "/ui/login", data={"csrf_token": token, "api_key": env.keys["admin"]}, follow_redirects=False
        )
        assert signed_in.status_code == 303
        token = CSRF_META.search(console.get("/ui/chat").text).group(1)
        created = console.post(
            "/ui/keys", data={"csrf_token": token, "role": "editor", "groups": "hr", "name": "made-in-ui"}
        )
        assert created.status_code == 201
        new_key = re.search(r'id="new-key" class="key" value="(kad_[^"]+)"', created.text).group(1)
        kb = console.post("/ui/kbs", data={"csrf_token": token, "slug": "ui-made"}, follow_redirects=False)
        assert kb.status_code == 303
        events = _events(console, env, actor="admin")
    mine = [event for event in events if event["client"] == "192.0.2.11"]
    assert [(event["action"], event["via"]) for event in reversed(mine)] == [
        ("console.sign-in", "console"),
        ("key.create", "console"),
        ("kb.create", "console"),
    ]
    assert re.fullmatch(r"key \d+", mine[1]["target"]) and "role editor" in mine[1]["detail"]
    assert mine[0]["kb"] == "ui-made"
    assert not any(new_key in row or new_key.split("_", 2)[2] in row for row in _all_rows(env))


def test_only_admins_read_the_audit_log(env, client):
    for principal in ("editor_owner", "editor_other", "reader_member", "reader_other"):
        response = client.get("/v1/audit", headers=env.headers(principal))
        assert response.status_code == 403, principal
        assert "only admins" in response.json()["error"]["message"]
        assert "data" not in response.json()
    assert client.get("/v1/audit").status_code == 401


def test_the_log_pages_and_filters(env, client, make_kb):
    names = make_kb()
    for mode in ("icl", "icl", "icl"):
        client.put(f"/v1/kbs/{names['kb']}/mode", headers=env.headers("admin"), json={"mode": mode})
    first = client.get("/v1/audit", params={"kb": names["kb"], "limit": 2}, headers=env.headers("admin")).json()
    assert len(first["data"]) == 2 and first["has_more"] and first["next_before"] == first["data"][-1]["id"]
    rest = client.get(
        "/v1/audit", params={"kb": names["kb"], "before": first["next_before"]}, headers=env.headers("admin")
    ).json()
    assert len(rest["data"]) == 1 and not rest["has_more"] and rest["next_before"] is None
    assert _events(client, env, kb=names["kb"], since="2999-01-01T00:00:00Z") == []
    assert len(_events(client, env, kb=names["kb"], since="2000-01-01")) == 3
    assert _events(client, env, kb=names["kb"], actor="reader_member") == []


def test_no_key_ever_reaches_the_log(env):
    rows = _all_rows(env)
    assert rows
    for key in env.keys.values():
        assert not any(key in row or key.split("_", 2)[2] in row for row in rows)


def test_every_state_changing_route_is_audited_or_declared_not_to_be(env):
    from kadapt.audit import API_ACTIONS, CONSOLE_ACTIONS, NOT_AUDITED

    api = {(method.upper(), path) for path, operations in env.app().openapi()["paths"].items() for method in operations}
    changing = {(method, path) for method, path in api | set(console_routes()) if method not in ("GET", "HEAD")}
    assert ("POST", "/ui/kbs/{slug}/sync") in changing and ("POST", "/v1/kbs") in changing
    known = set(API_ACTIONS) | set(CONSOLE_ACTIONS) | NOT_AUDITED
    assert changing - known == set(), "add the route to kadapt.audit's tables"
    assert known - changing == set(), "a table names a route that does not exist"


def test_every_cli_command_is_audited_or_declared_not_to_be():
    from kadapt.cli import build_app
    from kadapt.cli.audit import CLI_ACTIONS, NOT_AUDITED

    def paths(command: click.Command, prefix: str = ""):
        for name, sub in getattr(command, "commands", {}).items():
            path = f"{prefix} {name}".strip()
            yield from paths(sub, path) if hasattr(sub, "commands") else [path]

    commands = set(paths(typer.main.get_command(build_app())))
    assert commands - set(CLI_ACTIONS) - NOT_AUDITED == set(), "add the command to kadapt.cli.audit's tables"
    assert (set(CLI_ACTIONS) | NOT_AUDITED) - commands == set()
