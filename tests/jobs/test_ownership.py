"""Job attempts own their job (a security review's finding 7): a live job is never taken for dead during a silent phase,
a resume of a live job is refused, and an attempt superseded by a resume stops without writing over the new
attempt's row, so a job's body never completes twice."""

from __future__ import annotations

import itertools
import os
import threading
import time

import pytest

from kadapt.catalog import Job
from kadapt.errors import JobStillRunning
from kadapt.jobs import JOB_KINDS, JobSuperseded, get_job, job_function, recover_interrupted, run_job, submit
from tests.conftest import run_kadapt

STALE_SECONDS = 2.0


@pytest.fixture
def stale_limit(kadapt_env, monkeypatch):
    from kadapt.settings import get_settings

    monkeypatch.setenv("KADAPT_JOB_STALE_SECONDS", str(STALE_SECONDS))
    get_settings.cache_clear()
    yield STALE_SECONDS
    get_settings.cache_clear()


class Silent:
    """A job kind whose body says nothing until released, as a clone or a model load does; and a quick one."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.completed: list[int] = []  # the attempts whose body ran to its end
        attempts = itertools.count()

        @job_function("test-silent")
        def _silent(context, first_waits: bool = True, **_):
            attempt = next(attempts)
            self.started.set()
            if attempt == 0 and first_waits:
                self.release.wait(60)
            for step in range(3):  # the body's writes: the first of a superseded attempt stops it
                context.progress(done=step + 1, total=3, message=f"attempt {attempt} step {step}")
                context.flush()
            self.completed.append(attempt)
            return {"attempt": attempt}

        @job_function("test-quick")
        def _quick(context, **_):
            return {}


@pytest.fixture
def silent(stale_limit):
    from kadapt.plugins import get_plugins

    kinds = Silent()
    try:
        yield kinds
    finally:
        kinds.release.set()
        for thread in list(get_plugins().job_runners()["inprocess"].threads.values()):
            thread.join(60)  # their last write lands before the catalog goes away
        JOB_KINDS.pop("test-silent", None)
        JOB_KINDS.pop("test-quick", None)


def _join_jobs() -> None:
    from kadapt.plugins import get_plugins

    for thread in list(get_plugins().job_runners()["inprocess"].threads.values()):
        thread.join(60)


def test_a_job_silent_for_longer_than_the_stale_limit_is_not_taken_for_dead(catalog, silent):
    job_id = submit(catalog, "test-silent", wait=False)
    assert silent.started.wait(30)
    time.sleep(STALE_SECONDS * 2.5)  # no progress report all this while

    submit(catalog, "test-quick")  # every submission looks for dead jobs first
    assert recover_interrupted(catalog, stale_after=STALE_SECONDS) == []
    assert get_job(catalog, job_id).state == "running"

    silent.release.set()
    _join_jobs()
    job = get_job(catalog, job_id)
    assert (job.state, job.attempts, silent.completed) == ("succeeded", 1, [0])


def test_a_resume_of_a_live_job_is_refused(catalog, silent):
    job_id = submit(catalog, "test-silent", wait=False)
    assert silent.started.wait(30)
    time.sleep(STALE_SECONDS * 1.5)

    with pytest.raises(JobStillRunning) as refused:
        run_job(catalog, job_id)
    assert refused.value.status_code == 409
    assert f"job {job_id} is still running" in refused.value.message

    # the CLI (which looks for dead jobs when it opens the catalog) refuses it too, in one line
    result = run_kadapt("jobs", "resume", job_id, env=dict(os.environ))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"job {job_id} is still running" in result.stderr
    assert "Traceback" not in result.stderr

    silent.release.set()
    _join_jobs()
    job = get_job(catalog, job_id)
    assert (job.state, job.attempts, silent.completed) == ("succeeded", 1, [0])


def test_an_attempt_superseded_by_a_resume_stops_and_writes_nothing(catalog, silent):
    job_id = submit(catalog, "test-silent", wait=False)
    assert silent.started.wait(30)
    # the first attempt is taken for dead (as a crash trial or an operator would find it) and resumed
    with catalog.session() as session:
        session.get(Job, job_id).state = "interrupted"
    resumed = run_job(catalog, job_id)
    assert (resumed.state, resumed.result, resumed.attempts) == ("succeeded", {"attempt": 1}, 2)

    silent.release.set()  # the first attempt wakes up and reaches its next write
    _join_jobs()

    job = get_job(catalog, job_id)
    assert silent.completed == [1]  # the first attempt's body stopped at its first write
    assert (job.state, job.result, job.attempts) == ("succeeded", {"attempt": 1}, 2)
    assert job.message == "attempt 1 step 2"


def test_a_resume_after_the_process_died_runs_the_job(catalog, silent):
    # the claim of a dead attempt (heartbeat stale, no thread renewing it) is taken over
    job_id = submit(catalog, "test-quick")
    with catalog.session() as session:
        job = session.get(Job, job_id)
        job.state, job.owner = "interrupted", "0" * 32
    job = run_job(catalog, job_id)
    assert (job.state, job.attempts) == ("succeeded", 2)
    assert job.owner not in (None, "0" * 32)


def test_the_ray_watcher_of_a_dead_task_leaves_a_job_another_attempt_took_over(catalog, silent):
    from kadapt_ray import stop_job

    job_id = submit(catalog, "test-quick")
    with catalog.session() as session:  # resumed (running) by another attempt after the Ray task's one
        job = session.get(Job, job_id)
        job.state, job.owner, job.finished_at = "running", "b" * 32, None
    stop_job(catalog, job_id, "a" * 32, "interrupted", "the Ray task running this job stopped")
    assert get_job(catalog, job_id).state == "running"

    stop_job(catalog, job_id, "b" * 32, "interrupted", "the Ray task running this job stopped")
    assert get_job(catalog, job_id).state == "interrupted"  # its own attempt's task: recorded as before


def test_two_attempts_of_one_sync_never_hold_the_kbs_lock_together(catalog, kadapt_env, monkeypatch):
    from kadapt.errors import KBBusy
    from kadapt.jobs import JobContext, create_job
    from kadapt.kbs import add_source, create_kb
    from kadapt.locks import holder, kb_lock
    from kadapt.settings import get_settings
    from kadapt.sync import sync_kb

    monkeypatch.setenv("KADAPT_LOCK_LEASE_SECONDS", "1")
    monkeypatch.setenv("KADAPT_JOB_STALE_SECONDS", "1")  # a resumed attempt waits for the first this + a lease
    get_settings.cache_clear()
    (kadapt_env / "docs").mkdir()
    (kadapt_env / "docs" / "leave.md").write_text("# Leave\n\nEmployees get 27 days of leave.\n")
    kb = create_kb(catalog, "kb")
    add_source(catalog, get_settings(), "kb", "files", {"path": str(kadapt_env / "docs")})
    job_id = create_job(catalog, "sync", kb_id=kb.id, params={"kb": "kb"})
    with catalog.session() as session:
        job = session.get(Job, job_id)
        job.state, job.owner = "running", "a" * 32
    inside, go_on = threading.Event(), threading.Event()

    def hold(_context) -> None:  # the first attempt stays inside its sync (and the KB's lock) until told
        inside.set()
        go_on.wait(60)

    first = JobContext(catalog, job_id, [hold], owner="a" * 32)
    outcome: list[str] = []

    def run_first() -> None:
        try:
            sync_kb(catalog, "kb", context=first)
            outcome.append("finished")
        except JobSuperseded:
            outcome.append("stood down")

    thread = threading.Thread(target=run_first)
    thread.start()
    assert inside.wait(60)
    with catalog.session() as session:  # taken for dead and resumed: a second attempt owns the job
        session.get(Job, job_id).owner = "b" * 32
    second = JobContext(catalog, job_id, owner="b" * 32)

    with pytest.raises(KBBusy) as busy:  # it waits up to a lease for the first, which still holds the KB
        sync_kb(catalog, "kb", context=second)
    assert f"a sync runs as job {job_id};" in busy.value.message

    go_on.set()
    thread.join(60)
    assert outcome == ["stood down"]  # at its first write
    assert holder(catalog, kb_lock(kb.id)) is None
    stats = sync_kb(catalog, "kb", context=second)  # the KB is free: the second attempt syncs it
    assert stats.added == 1 and holder(catalog, kb_lock(kb.id)) is None
