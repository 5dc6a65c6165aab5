"""Jobs through the API as someone who reads a KB but does not manage it (an editor in a reader group only):
the job is visible, but cancelling it needs manage rights, and its error is one safe line with no traceback,
server path or source config (a security review's medium findings); the KB's managers see it all."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from kadapt.catalog import Job
from kadapt.jobs import JOB_KINDS, create_job, job_function, run_job
from tests.conftest import PRINCIPALS, issue_keys

SECRET_URL = "https://deploy:hunter2@git.internal.example/hr/handbook.git"
SERVER_PATH = "/srv/kadapt/data/sources/7/mirror"


@pytest.fixture
def api(catalog):
    from kadapt.api import create_app
    from kadapt.kbs import create_kb
    from kadapt.settings import get_settings

    @job_function("test-leaky")
    def _leaky(context, **_):
        context.log(f"cloning {SECRET_URL} into {SERVER_PATH}")
        raise RuntimeError(f"git clone {SECRET_URL} failed in {SERVER_PATH}")

    settings = get_settings()
    kb = create_kb(catalog, "handbook", reader_groups=["staff"], owner_groups=["hr"])
    keys = issue_keys(catalog, settings, PRINCIPALS)
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            yield client, keys, kb.id
    finally:
        JOB_KINDS.pop("test-leaky", None)


def _as(keys, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[who]}"}


def test_a_reader_of_the_kb_cannot_cancel_its_jobs(api, catalog):
    client, keys, kb_id = api
    job_id = create_job(catalog, "sync", kb_id=kb_id, params={"kb": "handbook"})

    refused = client.post(f"/v1/jobs/{job_id}/cancel", headers=_as(keys, "editor_reader"))
    assert refused.status_code == 403, refused.text
    assert "cannot cancel the job" in refused.json()["error"]["message"]
    with catalog.session() as session:
        job = session.get(Job, job_id)
        assert (job.state, job.cancel_requested) == ("queued", False)

    done = client.post(f"/v1/jobs/{job_id}/cancel", headers=_as(keys, "editor_owner"))
    assert done.status_code == 200 and done.json()["state"] == "cancelled"


def test_a_reader_of_the_kb_sees_one_safe_line_of_a_failed_jobs_error(api, catalog):
    client, keys, kb_id = api
    job_id = create_job(catalog, "test-leaky", kb_id=kb_id)
    assert run_job(catalog, job_id).state == "failed"

    owner = client.get(f"/v1/jobs/{job_id}", headers=_as(keys, "editor_owner")).json()
    assert "Traceback" in owner["error"] and SECRET_URL in owner["error"]  # managers see the full error
    assert SECRET_URL in owner["log"]

    shown = client.get(f"/v1/jobs/{job_id}", headers=_as(keys, "editor_reader"))
    listed = client.get("/v1/jobs", headers=_as(keys, "editor_reader"))
    assert shown.status_code == 200 and listed.status_code == 200
    for job in (shown.json(), next(job for job in listed.json() if job["id"] == job_id)):
        assert job["state"] == "failed"
        assert job["error"].startswith("the job failed; a manager of the KB")
        assert "\n" not in job["error"]
        text = repr(job)
        assert "Traceback" not in text and "hunter2" not in text and "/srv/" not in text and "git.internal" not in text
        assert job["log"] is None


def test_a_reader_of_the_kb_does_not_see_its_source_configs(api, catalog, tmp_path):
    from kadapt.kbs import add_source
    from kadapt.settings import get_settings

    client, keys, _ = api
    (tmp_path / "hr-docs").mkdir()
    add_source(catalog, get_settings(), "handbook", "files", {"path": str(tmp_path / "hr-docs")})

    assert client.get("/v1/kbs/handbook/sources", headers=_as(keys, "editor_reader")).status_code == 403
    listed = client.get("/v1/kbs/handbook/sources", headers=_as(keys, "editor_owner"))
    assert listed.status_code == 200 and str(tmp_path / "hr-docs") in listed.text


def test_a_reader_of_the_kb_does_not_see_its_last_syncs_source_errors(api, catalog):
    client, keys, kb_id = api
    job_id = create_job(catalog, "sync", kb_id=kb_id, params={"kb": "handbook"})
    with catalog.session() as session:
        job = session.get(Job, job_id)
        job.state, job.error = "failed", f"source 1 (git): fetch of {SECRET_URL} failed"
        job.result = {"listed": 0, "source_errors": [f"source 1 (git): fetch of {SECRET_URL} failed"]}

    managed = client.get("/v1/kbs/handbook", headers=_as(keys, "editor_owner"))
    assert SECRET_URL in managed.text
    shown = client.get("/v1/kbs/handbook", headers=_as(keys, "editor_reader"))
    assert shown.status_code == 200 and shown.json()["status"]["last_sync"]["state"] == "failed"
    assert "hunter2" not in shown.text and "git.internal" not in shown.text

    # nor through the job itself: a reader gets the counts of its result, not its source errors
    for path in (f"/v1/jobs/{job_id}", "/v1/jobs"):
        owner_view = client.get(path, headers=_as(keys, "editor_owner"))
        reader_view = client.get(path, headers=_as(keys, "editor_reader"))
        assert SECRET_URL in owner_view.text
        assert reader_view.status_code == 200 and job_id in reader_view.text
        assert "hunter2" not in reader_view.text and "git.internal" not in reader_view.text
    assert client.get(f"/v1/jobs/{job_id}", headers=_as(keys, "editor_reader")).json()["result"] == {"listed": 0}


def test_a_reader_of_the_kb_sees_which_documents_failed_but_not_why(api, catalog):
    """A document's error can name folders and kadapt's data directory: its managers read it, readers see that
    it could not be read."""
    from kadapt.catalog import DocumentError, Source
    from kadapt.kbs import READER_DOCUMENT_ERROR

    client, keys, kb_id = api
    with catalog.session() as session:
        source = Source(kb_id=kb_id, kind="files", config={})
        session.add(source)
        session.flush()
        message = "/srv/hr/secret.md is inside kadapt's data directory (/var/lib/kadapt), which no source may read"
        session.add(DocumentError(kb_id=kb_id, source_id=source.id, locator="secret.md", message=message))
    managed = client.get("/v1/kbs/handbook", headers=_as(keys, "editor_owner")).json()["status"]["errors"]
    shown = client.get("/v1/kbs/handbook", headers=_as(keys, "editor_reader")).json()["status"]["errors"]
    assert [error["message"] for error in managed] == [message]
    assert [(error["locator"], error["message"]) for error in shown] == [("secret.md", READER_DOCUMENT_ERROR)]
