"""Scheduled syncs: a source's cron schedule runs as ordinary sync jobs, each due run once, across API processes.

Real parts: the catalog (SQLite, or PostgreSQL in the scale-out pass), real sync jobs of a files source, and two
``kadapt serve`` processes on 127.0.0.1 sharing one catalog."""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from kadapt.catalog import Job, Source, utcnow
from kadapt.errors import InvalidInput
from kadapt.jobs import get_job
from kadapt.kbs import add_source, create_kb, get_kb, set_schedule
from kadapt.scheduler import run_due
from kadapt.schedules import check_schedule
from kadapt.settings import get_settings
from tests.conftest import Server, issue_keys, run_kadapt


@pytest.fixture
def scheduled(kadapt_env, catalog):
    """KB "wiki" with one files source scheduled daily at 03:00, due since three days (missed runs)."""
    docs = kadapt_env / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nThe Oslo office has 40 parking spaces.\n")
    create_kb(catalog, "wiki", title="Wiki")
    source = add_source(catalog, get_settings(), "wiki", "files", {"path": str(docs)}, schedule="0 3 * * *")
    _due_since(catalog, source.id, days=3)
    return source.id


def _due_since(catalog, source_id: int, *, days: float) -> None:
    with catalog.session() as session:
        session.execute(
            update(Source).where(Source.id == source_id).values(next_sync_at=utcnow() - timedelta(days=days))
        )


def _sync_jobs(catalog) -> list[Job]:
    with catalog.session() as session:
        return list(session.scalars(select(Job).where(Job.kind == "sync").order_by(Job.created_at)))


def _wait_finished(catalog, job_id: str) -> Job:
    deadline = time.monotonic() + 120
    while (job := get_job(catalog, job_id)).state not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, f"job {job_id} did not finish"
        time.sleep(0.1)
    return job


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * * * * *", "expected a cron expression of 5 fields"),
        ("$(rm -rf /)", "expected a cron expression of 5 fields"),
        ("--help", "expected a cron expression of 5 fields"),
        ("61 * * * *", "is not a valid cron expression"),
        ("*/0 * * * *", "is not a valid cron expression"),
        ("@reboot", "is not a valid cron expression"),
        ("0 0 31 2 *", "never comes round"),
        ("0 3 * * *" + " " * 100, None),  # spaces are normalised away
        ("1 " * 60, "at most 100 characters"),
    ],
)
def test_a_schedule_is_checked_and_a_bad_one_named(expression, message):
    if message is None:
        assert check_schedule(expression) == "0 3 * * *"
        return
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(")):
        check_schedule(expression)


def test_a_due_source_is_synced_once_and_its_missed_runs_are_not_caught_up(scheduled, catalog, monkeypatch):
    monkeypatch.setenv("KADAPT_SCHEDULED_RETRAIN", "true")  # a KB served in icl has no adapter to train again
    get_settings.cache_clear()
    now = utcnow()
    [outcome] = run_due(catalog, now)
    assert outcome.kb == "wiki" and outcome.sources == [scheduled] and outcome.deferred is None
    job = _wait_finished(catalog, outcome.job_id)
    assert job.state == "succeeded" and job.params == {"kb": "wiki", "scheduled": [scheduled]}
    assert job.result["added"] == 1 and job.result["retrain_job"] is None
    assert "no retrain: KB 'wiki' is served in icl, not from an adapter it trains" in job.log
    with catalog.session() as session:
        source = session.get(Source, scheduled)
        following = (
            source.next_sync_at if source.next_sync_at.tzinfo else source.next_sync_at.replace(tzinfo=now.tzinfo)
        )
    # three missed 03:00 runs make one sync, and the next is the first 03:00 after now
    assert now < following <= now + timedelta(days=1) and (following.hour, following.minute) == (3, 0)
    assert run_due(catalog, now) == [] and len(_sync_jobs(catalog)) == 1


def test_two_schedulers_racing_on_one_catalog_start_one_sync(scheduled, catalog):
    now, barrier, outcomes = utcnow(), threading.Barrier(4), []

    def tick():
        barrier.wait()
        outcomes.extend(run_due(catalog, now))

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    started = [outcome.job_id for outcome in outcomes if outcome.job_id]
    assert len(started) == 1 and [job.id for job in _sync_jobs(catalog)] == started
    _wait_finished(catalog, started[0])


def test_a_busy_kb_keeps_its_source_due_until_it_is_free(scheduled, catalog):
    from kadapt.locks import acquire, kb_lock, release

    kb = get_kb(catalog, "wiki")
    assert acquire(catalog, kb_lock(kb.id), "a-running-sync", 60)
    [outcome] = run_due(catalog)
    assert outcome.job_id is None and "a-running-sync" in outcome.deferred and _sync_jobs(catalog) == []
    release(catalog, kb_lock(kb.id), "a-running-sync")
    [outcome] = run_due(catalog)  # the next tick: it runs once
    assert _wait_finished(catalog, outcome.job_id).state == "succeeded"
    assert run_due(catalog) == []


def test_a_schedule_is_set_changed_and_cleared_by_cli_and_api(scheduled, catalog, kadapt_env):
    done = run_kadapt("source", "edit", str(scheduled), "--schedule", "*/15 * * * *", "--json")
    assert done.returncode == 0, done.stderr
    with catalog.session() as session:
        source = session.get(Source, scheduled)
        assert source.schedule == "*/15 * * * *" and source.next_sync_at is not None
    refused = run_kadapt("source", "edit", str(scheduled), "--schedule", "0 25 * * *")
    assert refused.returncode == 1 and "is not a valid cron expression" in refused.stderr
    listed = run_kadapt("source", "list")
    assert "*/15 * * * *" in listed.stdout
    assert set_schedule(catalog, scheduled, "").schedule is None
    with catalog.session() as session:
        assert session.get(Source, scheduled).next_sync_at is None

    from fastapi.testclient import TestClient

    from kadapt.api import create_app

    key = issue_keys(catalog, get_settings(), {"admin": ("admin", [])})["admin"]
    client = TestClient(create_app())
    headers = {"Authorization": f"Bearer {key}"}
    path = f"/v1/kbs/wiki/sources/{scheduled}"
    bad = client.patch(path, json={"schedule": "* * * * * *"}, headers=headers)
    assert bad.status_code == 400 and "5 fields" in bad.json()["error"]["message"], bad.text
    good = client.patch(path, json={"schedule": "@daily"}, headers=headers)
    assert good.status_code == 200 and good.json()["schedule"] == "@daily" and good.json()["next_sync_at"]
    assert (
        client.patch(f"/v1/kbs/wiki/sources/{scheduled + 99}", json={"schedule": None}, headers=headers).status_code
        == 404
    )
    status = client.get("/v1/kbs/wiki", headers=headers).json()
    assert status["status"]["next_sync"] == good.json()["next_sync_at"]


@pytest.mark.slow
def test_two_api_processes_run_a_sync_missed_while_they_were_down_once(scheduled, catalog):
    """The scale-out pass runs this on one PostgreSQL catalog; here, on one SQLite file."""
    env = dict(os.environ) | {"KADAPT_SCHEDULER_TICK_SECONDS": "1"}
    servers = [Server(env), Server(env)]
    try:
        deadline = time.monotonic() + 120
        while not (jobs := _sync_jobs(catalog)) or jobs[0].state not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, "no scheduled sync ran"
            time.sleep(0.2)
        time.sleep(4)  # a few more ticks of both schedulers
        jobs = _sync_jobs(catalog)
        assert len(jobs) == 1 and jobs[0].state == "succeeded" and jobs[0].params["scheduled"] == [scheduled]
        for server in servers:
            assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
    finally:
        for server in servers:
            server.stop()


def test_a_sync_that_cannot_start_leaves_its_source_due(scheduled, catalog, monkeypatch):
    monkeypatch.setenv("KADAPT_JOB_RUNNER", "no-such-runner")  # the runner cannot be found: submit fails
    get_settings.cache_clear()
    with catalog.session() as session:
        due = session.get(Source, scheduled).next_sync_at
    [outcome] = run_due(catalog)
    assert outcome.job_id is None and "no-such-runner" in outcome.deferred
    with catalog.session() as session:
        assert session.get(Source, scheduled).next_sync_at == due  # still due: the next tick tries again
    assert _sync_jobs(catalog) == []
