"""KADAPT_MAX_CONCURRENT_JOBS: a submission past it is refused with a clear error (TooManyJobs, HTTP 429 with
Retry-After, CLI exit 1) and leaves no job behind; jobs whose process died never hold a slot; two
submissions racing for the last slot do not both get it (SQLite here, PostgreSQL under ``.ci/scaleout``)."""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from kadapt.catalog import Job, utcnow
from kadapt.errors import TooManyJobs
from kadapt.jobs import JOB_KINDS, create_job, get_job, job_function, run_job, submit
from tests.conftest import run_kadapt

REFUSED = (
    "too many jobs: {active} queued or running, and KADAPT_MAX_CONCURRENT_JOBS={limit}; retry when one has finished"
)


class Blocking:
    """A job kind that runs until released, so a test controls how many jobs are running."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Semaphore(0)

        @job_function("test-block")
        def _block(context, **_):
            self.started.release()
            self.release.wait(60)
            return {}

        @job_function("test-quick")
        def _quick(context, **_):
            return {}

    def start(self, catalog, count: int) -> list[str]:
        jobs = [submit(catalog, "test-block", wait=False) for _ in range(count)]
        for _ in jobs:
            assert self.started.acquire(timeout=30)
        return jobs


@pytest.fixture
def blocking(kadapt_env):
    from kadapt.plugins import get_plugins

    kinds = Blocking()
    try:
        yield kinds
    finally:
        kinds.release.set()
        for thread in list(get_plugins().job_runners()["inprocess"].threads.values()):
            thread.join(30)  # their last write lands before the catalog goes away
        JOB_KINDS.pop("test-block", None)
        JOB_KINDS.pop("test-quick", None)


def finish(catalog, job_ids: list[str]) -> None:
    deadline = time.monotonic() + 30
    while any(get_job(catalog, job_id).state not in ("succeeded", "failed") for job_id in job_ids):
        assert time.monotonic() < deadline, "the released jobs did not finish"
        time.sleep(0.05)


def job_count(catalog) -> int:
    with catalog.session() as session:
        return session.scalar(select(func.count()).select_from(Job))


def add_job(catalog, state: str, heartbeat_age: float | None) -> str:
    """A job row as another process left it: ``state``, heartbeat ``heartbeat_age`` seconds ago (None: never)."""
    job_id = create_job(catalog, "sync", params={"kb": "elsewhere"})
    with catalog.session() as session:
        job = session.get(Job, job_id)
        job.state = state
        job.heartbeat_at = None if heartbeat_age is None else utcnow() - timedelta(seconds=heartbeat_age)
    return job_id


def test_a_submission_past_the_limit_is_refused_and_leaves_no_job(catalog, limits, blocking):
    limits(max_concurrent_jobs=2)
    running = blocking.start(catalog, 2)

    with pytest.raises(TooManyJobs) as refused:
        submit(catalog, "test-quick")

    assert refused.value.message.startswith(REFUSED.format(active=2, limit=2))
    assert refused.value.status_code == 429 and refused.value.headers == {"Retry-After": "30"}
    assert job_count(catalog) == 2
    blocking.release.set()
    finish(catalog, running)
    assert get_job(catalog, submit(catalog, "test-quick")).state == "succeeded"  # a slot is free again


def test_jobs_whose_process_died_or_that_no_runner_took_hold_no_slot(catalog, limits, blocking):
    limits(max_concurrent_jobs=1, job_stale_seconds=5)
    dead = add_job(catalog, "running", heartbeat_age=3600)  # its process died an hour ago
    never_submitted = add_job(catalog, "queued", heartbeat_age=None)  # created, never handed to a runner
    never_started = add_job(catalog, "queued", heartbeat_age=3600)  # its process died before the runner began
    add_job(catalog, "interrupted", heartbeat_age=3600)

    done = submit(catalog, "test-quick")

    assert get_job(catalog, done).state == "succeeded"
    assert get_job(catalog, dead).state == "interrupted"  # found by recover_interrupted
    assert get_job(catalog, never_started).state == "interrupted"  # resumable, not queued forever
    assert "before it started" in get_job(catalog, never_started).error
    assert get_job(catalog, never_submitted).state == "queued"
    add_job(catalog, "running", heartbeat_age=1)  # alive
    with pytest.raises(TooManyJobs):
        submit(catalog, "test-quick")


def test_two_submissions_racing_for_the_last_slot_do_not_both_get_it(catalog, limits, blocking, monkeypatch):
    import kadapt.jobs

    limits(max_concurrent_jobs=1)
    counted = kadapt.jobs._active_jobs

    def slow_count(*args, **kwargs):  # widen the window between counting and writing the new job
        active = counted(*args, **kwargs)
        time.sleep(0.5)
        return active

    monkeypatch.setattr(kadapt.jobs, "_active_jobs", slow_count)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def race() -> None:
        barrier.wait()
        try:
            submit(catalog, "test-block", wait=False)
            outcomes.append("admitted")
        except TooManyJobs:
            outcomes.append("refused")

    threads = [threading.Thread(target=race) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(outcomes) == ["admitted", "refused"]
    assert job_count(catalog) == 1


def test_resuming_an_interrupted_job_needs_a_free_slot(catalog, limits, blocking):
    limits(max_concurrent_jobs=1)
    interrupted = create_job(catalog, "test-quick")
    with catalog.session() as session:
        session.get(Job, interrupted).state = "interrupted"
    running = blocking.start(catalog, 1)

    with pytest.raises(TooManyJobs):
        run_job(catalog, interrupted)
    assert get_job(catalog, interrupted).state == "interrupted"

    blocking.release.set()
    finish(catalog, running)
    assert run_job(catalog, interrupted).state == "succeeded"


def test_the_api_answers_429_with_retry_after_and_starts_nothing(catalog, limits):
    from fastapi.testclient import TestClient

    from kadapt.api import create_app
    from kadapt.kbs import create_kb
    from kadapt.settings import get_settings

    limits(max_concurrent_jobs=1, auth_disabled="true")
    create_kb(catalog, "kb")
    add_job(catalog, "running", heartbeat_age=0)
    with TestClient(create_app(get_settings()), raise_server_exceptions=False) as client:
        response = client.post("/v1/kbs/kb/sync")

    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == "30"
    error = response.json()["error"]
    assert error["code"] == "too_many_jobs" and error["type"] == "rate_limit_error"
    assert error["message"].startswith(REFUSED.format(active=1, limit=1))
    assert job_count(catalog) == 1


def test_the_cli_prints_one_line_and_exits_1(catalog, limits):
    from kadapt.kbs import create_kb

    limits(max_concurrent_jobs=1)
    create_kb(catalog, "kb")
    add_job(catalog, "running", heartbeat_age=0)

    result = run_kadapt("sync", "kb", env=dict(os.environ))

    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: " + REFUSED.format(active=1, limit=1))
    assert len(result.stderr.strip().splitlines()) == 1
    assert job_count(catalog) == 1


def test_the_console_answers_429_with_retry_after_and_starts_nothing(catalog, limits):
    from fastapi.testclient import TestClient

    from kadapt.api import create_app
    from kadapt.auth import create_key
    from kadapt.kbs import create_kb
    from kadapt.settings import get_settings
    from tests.web.conftest import CSRF_META, login_form

    limits(max_concurrent_jobs=1)
    create_kb(catalog, "kb")
    key, _ = create_key(catalog, get_settings(), role="admin", groups=[])
    add_job(catalog, "running", heartbeat_age=0)
    with TestClient(create_app(get_settings()), raise_server_exceptions=False, follow_redirects=False) as client:
        signed_in = client.post("/ui/login", data={"csrf_token": login_form(client), "api_key": key})
        assert signed_in.status_code == 303, signed_in.text
        csrf = CSRF_META.search(client.get("/ui/chat").text).group(1)
        response = client.post("/ui/kbs/kb/sync", data={"csrf_token": csrf})

    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == "30"
    assert "KADAPT_MAX_CONCURRENT_JOBS=1" in response.text
    assert job_count(catalog) == 1
