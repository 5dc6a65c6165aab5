"""Push-style sources: ``POST /v1/sources/{id}/notify`` (a webhook) queues an incremental sync of the source's
KB, joins one still waiting, and is refused with Retry-After while one runs; only the KB's managers may call it."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from kadapt.catalog import Job
from kadapt.jobs import TERMINAL_STATES, create_job
from tests.conftest import PRINCIPALS, issue_keys


@pytest.fixture
def api(catalog, kadapt_env):
    from kadapt.api import create_app
    from kadapt.kbs import add_source, create_kb
    from kadapt.settings import get_settings

    settings = get_settings()
    docs = kadapt_env / "docs"
    docs.mkdir()
    (docs / "leave.md").write_text("# Leave\n\nEmployees get 27 days of leave.\n")
    kb = create_kb(catalog, "handbook", reader_groups=["staff"], owner_groups=["hr"])
    source = add_source(catalog, settings, "handbook", "files", {"path": str(docs)})
    keys = issue_keys(catalog, settings, PRINCIPALS)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, keys, kb.id, source.id, docs


def _as(keys, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[who]}"}


def _finished(client, keys, job_id: str) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=_as(keys, "admin")).json()
        if job["state"] in TERMINAL_STATES:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_a_notification_syncs_what_changed(api, store, catalog):
    from kadapt.kbs import get_kb

    client, keys, _, source_id, docs = api
    first = client.post(f"/v1/sources/{source_id}/notify", headers=_as(keys, "editor_owner"))
    assert first.status_code == 202, first.text
    assert first.json()["kind"] == "sync"
    assert _finished(client, keys, first.json()["id"])["state"] == "succeeded"

    (docs / "parking.md").write_text("# Parking\n\nThe car park opens at seven in the morning.\n")
    second = client.post(f"/v1/sources/{source_id}/notify", headers=_as(keys, "admin"))
    assert second.status_code == 202, second.text
    job = _finished(client, keys, second.json()["id"])
    assert job["state"] == "succeeded"
    assert (job["result"]["added"], job["result"]["skipped_unread"]) == (1, 1)  # incremental: leave.md not read
    hit = store.search(get_kb(catalog, "handbook"), "when does the car park open", k=1)[0]
    assert hit.locator == "parking.md"


def test_a_waiting_sync_takes_the_notification_and_a_running_one_syncs_again(api, catalog, monkeypatch):
    import kadapt.sync
    from kadapt.jobs import run_job

    client, keys, kb_id, source_id, docs = api
    waiting = create_job(catalog, "sync", kb_id=kb_id, params={"kb": "handbook"})
    with catalog.session() as session:
        session.get(Job, waiting).heartbeat_at = session.get(Job, waiting).created_at  # handed to a runner
    joined = client.post(f"/v1/sources/{source_id}/notify", headers=_as(keys, "editor_owner"))
    assert (joined.status_code, joined.json()["id"]) == (202, waiting)
    with catalog.session() as session:
        assert session.query(Job).filter(Job.kind == "sync").count() == 1  # nothing new was queued

    # the waiting sync runs; while it reads the source, a page is added and notified: the running sync is
    # answered, and reads the source again once done
    real_sync, calls = kadapt.sync.sync_kb, []

    def sync_with_a_change_midway(*args, **kwargs):
        stats = real_sync(*args, **kwargs)
        calls.append(stats)
        if len(calls) == 1:
            (docs / "parking.md").write_text("# Parking\n\nThe car park opens at seven in the morning.\n")
            during = client.post(f"/v1/sources/{source_id}/notify", headers=_as(keys, "admin"))
            assert (during.status_code, during.json()["id"]) == (202, waiting)
        return stats

    monkeypatch.setattr(kadapt.sync, "sync_kb", sync_with_a_change_midway)
    run_job(catalog, waiting)
    with catalog.session() as session:
        job = session.get(Job, waiting)
        assert (job.state, job.result["notifications"]) == ("succeeded", 1)
    assert [(stats.added, stats.skipped_unread) for stats in calls] == [(1, 0), (1, 1)]


def test_only_the_kbs_managers_may_notify_and_other_sources_look_missing(api):
    client, keys, _, source_id, _ = api
    hidden = client.post(f"/v1/sources/{source_id}/notify", headers=_as(keys, "editor_other"))
    missing = client.post("/v1/sources/99999/notify", headers=_as(keys, "editor_other"))
    assert (hidden.status_code, missing.status_code) == (404, 404)
    assert hidden.json()["error"]["message"] == missing.json()["error"]["message"].replace("99999", str(source_id))
    reader = client.post(f"/v1/sources/{source_id}/notify", headers=_as(keys, "editor_reader"))
    assert reader.status_code == 403 and "not manage it" in reader.json()["error"]["message"]
    assert client.post(f"/v1/sources/{source_id}/notify", headers=_as(keys, "reader_member")).status_code == 403
    assert client.post(f"/v1/sources/{source_id}/notify").status_code == 401
