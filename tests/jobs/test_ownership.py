"""Job attempts own their job (issue 14, finding 7): a live job is never taken for dead during a silent phase,
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
from kadapt.jobs import JOB_KINDS, get_job, job_function, recover_interrupted, run_job, submit
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
    from kadapt_ray import _stop_job

    job_id = submit(catalog, "test-quick")
    with catalog.session() as session:  # resumed (running) by another attempt after the Ray task's one
        job = session.get(Job, job_id)
        job.state, job.owner, job.finished_at = "running", "b" * 32, None
    _stop_job(catalog, job_id, "a" * 32, "interrupted", "the Ray task running this job stopped")
    assert get_job(catalog, job_id).state == "running"

    _stop_job(catalog, job_id, "b" * 32, "interrupted", "the Ray task running this job stopped")
    assert get_job(catalog, job_id).state == "interrupted"  # its own attempt's task: recorded as before
