"""Durable jobs: state, progress and log live in the catalog, whatever runner executes them.

A job function takes a :class:`JobContext` and the job's params, reports progress through it, and
returns a JSON-able result. A job interrupted by a crash is found by :func:`recover_interrupted` and can
be run again (``resume``): job functions are written to be idempotent.

:func:`submit` admits at most ``KADAPT_MAX_CONCURRENT_JOBS`` jobs at once: jobs running, and jobs handed
to a runner that has not started them yet (queued, within ``KADAPT_JOB_STALE_SECONDS`` of being handed
over). The count and the new row are written under a lock the whole catalog shares (``BEGIN IMMEDIATE``
on SQLite, a transaction-scoped advisory lock on PostgreSQL), so two submissions racing for the last slot
cannot both get it. Running jobs whose heartbeat stopped are first marked interrupted, so a dead process
never holds a slot; a resumed job needs a free slot like a new one.

Each attempt at a job (the first run, every resume) claims the row with a token of its own (``job.owner``)
and a background thread renews its heartbeat while the job function runs, silent phases included (a clone,
a model load). Every write of an attempt checks the token: an attempt that another one took over (its
process was thought dead and the job resumed) stops with :class:`JobSuperseded` at its next write and never
writes over the new attempt's row. A resume of a job whose heartbeat is fresh is refused.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from kadapt.catalog import Catalog, Job, utcnow
from kadapt.errors import InvalidInput, JobStillRunning, KadaptError, NotFound, TooManyJobs

__all__ = [
    "JobCancelled",
    "JobContext",
    "JobKind",
    "JobSuperseded",
    "JOB_KINDS",
    "TERMINAL_STATES",
    "cancel_job",
    "create_job",
    "get_job",
    "outcome_message",
    "job_function",
    "job_kinds",
    "recover_interrupted",
    "run_job",
    "submit",
]

TERMINAL_STATES = {"succeeded", "failed", "cancelled"}
JOB_KINDS: dict[str, Callable[..., dict[str, Any]]] = {}
JOB_CHECKS: dict[str, Callable[..., None]] = {}
_HEARTBEAT_SECONDS = 1.0
_ADMISSION_LOCK = 0x6B61_6461_7074  # PostgreSQL advisory lock key of job admission ("kadapt")
_RETRY_AFTER_SECONDS = 30
_MAX_BEAT_SECONDS = 5.0  # the background heartbeat's period: a third of KADAPT_JOB_STALE_SECONDS, at most this
_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobKind:
    """A kind of background job: ``run(context, **params)`` returns the job's JSON-able result; ``check(catalog,
    **params)``, when given, runs in :func:`submit` before the job is created and raises a
    :class:`~kadapt.errors.KadaptError` when the job cannot succeed (e.g. a KB over a size limit), so the caller
    gets the error at once and no failed job is left behind. Plugins register kinds through ``register_job_kinds``
    (kadapt's own: :mod:`kadapt.job_kinds`)."""

    kind: str
    run: Callable[..., dict[str, Any]]
    check: Callable[..., None] | None = None


def job_function(kind: str, *, check: Callable[..., None] | None = None):
    """Declare, in this process only, the function that runs jobs of ``kind`` (a script's or a test's own kind;
    a plugin registers its kinds through ``register_job_kinds``)."""

    def decorate(function: Callable[..., dict[str, Any]]):
        JOB_KINDS[kind] = function
        if check is not None:
            JOB_CHECKS[kind] = check
        return function

    return decorate


def job_kinds(plugins=None) -> dict[str, JobKind]:
    """Every kind of job: those the plugins register and those declared with :func:`job_function`."""
    from kadapt.plugins import get_plugins

    kinds = dict((plugins or get_plugins()).contributions("register_job_kinds"))
    for kind, function in JOB_KINDS.items():
        if kind in kinds:
            raise InvalidInput(f"job kind {kind!r} is declared twice (a plugin registers it)")
        kinds[kind] = JobKind(kind, function, JOB_CHECKS.get(kind))
    return kinds


class JobCancelled(Exception):
    pass


class JobSuperseded(JobCancelled):
    """Another attempt took the job over (this one was thought dead and the job was resumed): this attempt
    stops and writes nothing more to the job's row."""


class JobContext:
    """Handed to a running job: progress, log lines and cancellation, written to the catalog."""

    def __init__(
        self,
        catalog: Catalog,
        job_id: str,
        listeners: list[Callable[[JobContext], None]] | None = None,
        *,
        owner: str | None = None,
    ):
        self.catalog = catalog
        self.job_id = job_id
        self.owner = owner  # this attempt's token; None only for a context that no run_job claimed
        self.superseded = threading.Event()  # set by the heartbeat when another attempt took the job over
        self.done = 0
        self.total: int | None = None
        self.message = ""
        self._log: list[str] = []
        self._listeners = listeners or []
        self._last_write = 0.0

    @property
    def attempt_name(self) -> str:
        """``<job id>:<attempt>``: this attempt's name for the locks it holds (49 characters at most), so that
        two attempts of one job never hold a lock together, and one never frees the other's."""
        return f"{self.job_id}:{(self.owner or '')[:16]}"

    def progress(self, done: int | None = None, total: int | None = None, message: str | None = None) -> None:
        if done is not None:
            self.done = done
        if total is not None:
            self.total = total
        if message is not None:
            self.message = message[:500]
        for listener in self._listeners:
            listener(self)
        if self.superseded.is_set():
            raise JobSuperseded("another attempt took this job over (`kadapt jobs resume`); this one stops")
        now = time.monotonic()
        if now - self._last_write >= _HEARTBEAT_SECONDS:
            self.flush()

    def advance(self, steps: int = 1, message: str | None = None) -> None:
        self.progress(done=self.done + steps, message=message)

    def log(self, line: str) -> None:
        self._log.append(f"{utcnow().strftime('%H:%M:%S')} {line}")
        self.flush()

    def flush(self) -> None:
        """Write progress and log to the catalog; raise JobCancelled when a cancel was requested, and
        JobSuperseded when another attempt owns the job now."""
        self._last_write = time.monotonic()
        values: dict[str, Any] = {
            "progress_done": self.done,
            "progress_total": self.total,
            "message": self.message,
            "heartbeat_at": utcnow(),
        }
        if self._log:
            values["log"] = func.coalesce(Job.log, "") + ("\n".join(self._log) + "\n")
        with self.catalog.session() as session:
            written = _write_owned(session, self.job_id, self.owner, values)
            cancelled = session.scalar(select(Job.cancel_requested).where(Job.id == self.job_id))
        if written:
            self._log.clear()
        if cancelled is None:
            raise JobCancelled("the job was deleted")
        if not written:
            self.superseded.set()
            raise JobSuperseded("another attempt took this job over (`kadapt jobs resume`); this one stops")
        if cancelled:
            raise JobCancelled("cancelled on request")


def _write_owned(session: Session, job_id: str, owner: str | None, values: dict[str, Any]) -> bool:
    """Write ``values`` to the job's row if attempt ``owner`` still owns it; return whether it did."""
    owned = Job.owner.is_(None) if owner is None else Job.owner == owner
    written = session.execute(update(Job).where(Job.id == job_id, owned).values(**values))
    return written.rowcount == 1


class _Heartbeat:
    """Renews an attempt's heartbeat from a daemon thread while its job function runs, so that a silent
    phase longer than ``KADAPT_JOB_STALE_SECONDS`` does not get a live job taken for dead."""

    def __init__(self, context: JobContext, stale_after: float) -> None:
        self.context = context
        self.period = min(_MAX_BEAT_SECONDS, stale_after / 3)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"kadapt-beat-{context.job_id[:8]}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        context = self.context
        while not self._stop.wait(self.period):
            try:
                with context.catalog.session() as session:
                    owned = _write_owned(session, context.job_id, context.owner, {"heartbeat_at": utcnow()})
            except Exception:  # a busy or briefly unreachable catalog: the next beat tries again
                _logger.warning("heartbeat of job %s not written", context.job_id, exc_info=True)
                continue
            if not owned:  # superseded or deleted: the job function stops at its next report
                context.superseded.set()
                return


def create_job(
    catalog: Catalog,
    kind: str,
    *,
    kb_id: int | None = None,
    params: dict[str, Any] | None = None,
    runner: str = "inprocess",
) -> str:
    """Add a queued job row and return its id. It counts towards ``KADAPT_MAX_CONCURRENT_JOBS`` only once
    :func:`submit` hands it to a runner; use :func:`submit` to start work."""
    _job_kind(kind)
    job_id = uuid.uuid4().hex
    with catalog.session() as session:
        session.add(Job(id=job_id, kind=kind, kb_id=kb_id, params=params or {}, runner=runner))
    return job_id


def _job_kind(kind: str, plugins=None) -> JobKind:
    kinds = job_kinds(plugins)
    if kind not in kinds:
        raise InvalidInput(f"unknown job kind {kind!r}; known: {', '.join(sorted(kinds))}")
    return kinds[kind]


def _lock_admission(session: Session) -> None:
    """Serialize job admission across every process sharing the catalog, until the transaction ends.

    It must be the transaction's first statement: on SQLite it takes the database's write lock."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        session.execute(text("BEGIN IMMEDIATE"))
    elif dialect == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(_ADMISSION_LOCK)))


def _active_jobs(session: Session, stale_after: float, exclude: str | None = None) -> int:
    """Jobs running, or handed to a runner (a queued job with a heartbeat) within ``stale_after`` seconds."""
    cutoff = utcnow() - timedelta(seconds=stale_after)
    rows = session.execute(select(Job.id, Job.state, Job.heartbeat_at).where(Job.state.in_(("queued", "running"))))
    active = 0
    for job_id, state, heartbeat in rows:
        if job_id == exclude:
            continue
        if heartbeat is not None and heartbeat.tzinfo is None:
            heartbeat = heartbeat.replace(tzinfo=cutoff.tzinfo)
        if state == "running" or (heartbeat is not None and heartbeat >= cutoff):
            active += 1
    return active


def _admit(session: Session, exclude: str | None = None) -> None:
    """Raise :class:`TooManyJobs` when ``KADAPT_MAX_CONCURRENT_JOBS`` jobs are already active."""
    from kadapt.settings import get_settings

    settings = get_settings()
    limit = settings.max_concurrent_jobs
    active = _active_jobs(session, settings.job_stale_seconds, exclude)
    if active >= limit:
        raise TooManyJobs(
            f"too many jobs: {active} queued or running, and KADAPT_MAX_CONCURRENT_JOBS={limit}; retry when one "
            "has finished (`kadapt jobs` lists them, `kadapt jobs cancel ID` stops one)",
            retry_after=_RETRY_AFTER_SECONDS,
        )


def outcome_message(job: Job) -> str:
    """One line on a job that did not succeed, for whoever ran it and waited: its state and error; or, when
    another attempt took it over (it was resumed elsewhere while this one ran), where it went."""
    if job.state in ("queued", "running"):  # its attempt here returned, yet the job goes on: another runs it
        return (
            f"{job.kind} job {job.id} was taken over by another attempt (`kadapt jobs resume`), which has it "
            f"{job.state}; follow it with `kadapt jobs show {job.id}`"
        )
    return f"{job.kind} {job.state}: {job.error}"


def get_job(catalog: Catalog, job_id: str) -> Job:
    with catalog.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}; list jobs with `kadapt jobs`")
        return job


def cancel_job(catalog: Catalog, job_id: str) -> Job:
    """Cancel a job: one not started (queued, interrupted) at once; a running one at its next write.

    It runs under the lock attempts claim jobs under, and both writes are conditional, so an attempt claiming
    the job at the same moment never runs with its cancel lost: either the job was cancelled before the claim
    (the claim then finds it terminal), or the claim came first and the request is flagged on the running row."""
    with catalog.session() as session:
        _lock_admission(session)
        stopped = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state.in_(("queued", "interrupted")))
            .values(state="cancelled", finished_at=utcnow())
        ).rowcount
        if not stopped:
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.state.not_in(tuple(TERMINAL_STATES)))
                .values(cancel_requested=True)
            )
    with catalog.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return job


def run_job(
    catalog: Catalog,
    job_id: str,
    listeners: list[Callable[[JobContext], None]] | None = None,
    *,
    owner: str | None = None,
) -> Job:
    """Run a queued (or interrupted) job to completion in this thread and return its final row.

    An interrupted job resumed here needs a free slot under ``KADAPT_MAX_CONCURRENT_JOBS``; a job still
    running (its heartbeat fresh) is refused with :class:`~kadapt.errors.JobStillRunning`. When another
    attempt takes the job over meanwhile, this one stops and the row returned is the other attempt's.

    ``owner`` is this attempt's token (default: a new one); a runner that must tell its attempt apart later
    (Ray's watcher, once the task died) chooses it."""
    from kadapt.settings import get_settings

    stale_after = get_settings().job_stale_seconds
    owner = owner or uuid.uuid4().hex
    kind, params = _claim(catalog, job_id, owner, stale_after)
    run = _job_kind(kind).run
    context = JobContext(catalog, job_id, listeners, owner=owner)
    try:
        with _Heartbeat(context, stale_after):
            state, result, error = "succeeded", run(context, **params) or {}, None
    except JobSuperseded:
        return _final_row(catalog, job_id)  # the row is the new attempt's: nothing of this one is written
    except Exception as exc:  # recorded on the job; the process and other jobs go on
        state, result, error = _outcome(exc)
    final: dict[str, Any] = {
        "state": state,
        "result": result,
        "error": error,
        "progress_done": context.done,
        "progress_total": context.total,
        "message": context.message,
        "finished_at": utcnow(),
        "heartbeat_at": utcnow(),
    }
    if context._log:
        final["log"] = func.coalesce(Job.log, "") + ("\n".join(context._log) + "\n")
    with catalog.session() as session:
        # a superseded attempt (or one whose job was deleted) writes nothing over the row
        _write_owned(session, job_id, owner, final)
    return _final_row(catalog, job_id)


def _claim(catalog: Catalog, job_id: str, owner: str, stale_after: float) -> tuple[str, dict[str, Any]]:
    """Take the job for this attempt (``owner``): refused when it finished, or runs elsewhere with a fresh
    heartbeat; a resumed one needs a free slot. Returns its kind and params."""
    with catalog.session() as session:
        _lock_admission(session)
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        if job.state in TERMINAL_STATES:
            raise InvalidInput(f"job {job_id} already {job.state}")
        if job.state == "running" and _age(job.heartbeat_at) < stale_after:
            raise JobStillRunning(
                f"job {job_id} is still running (its last heartbeat is {_age(job.heartbeat_at):.0f} s old, and a job "
                f"is taken as stopped after KADAPT_JOB_STALE_SECONDS={stale_after:g}); cancel it with "
                f"`kadapt jobs cancel {job_id}` or wait for it to finish"
            )
        if job.state in ("interrupted", "running"):
            _admit(session, exclude=job_id)
        job.state = "running"
        job.owner = owner
        job.attempts += 1
        job.started_at = job.started_at or utcnow()
        job.heartbeat_at = utcnow()
        job.error = None
        return job.kind, dict(job.params)


def _outcome(exc: Exception) -> tuple[str, dict[str, Any], str]:
    """(state, result, error) of a job that raised ``exc``: cancelled, or failed with what the user may read (a
    KadaptError's message and the partial result it carries; else the traceback)."""
    if isinstance(exc, JobCancelled):
        return "cancelled", {}, str(exc)
    if isinstance(exc, KadaptError):
        return "failed", getattr(exc, "result", {}), exc.message
    return "failed", {}, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"


def _final_row(catalog: Catalog, job_id: str) -> Job:
    with catalog.session() as session:
        job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} was deleted while it ran (with its KB); nothing of it was kept")
    return job


def _age(moment) -> float:
    """Seconds since ``moment`` (a catalog timestamp); infinite for None."""
    if moment is None:
        return float("inf")
    now = utcnow()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=now.tzinfo)
    return (now - moment).total_seconds()


def recover_interrupted(catalog: Catalog, *, stale_after: float = 30.0) -> list[str]:
    """Mark jobs whose process died as ``interrupted`` and return their ids: running jobs whose heartbeat
    stopped, and jobs handed to the in-process runner that never started (their process died in between;
    that runner starts a job at once). A job waiting in a cluster's queue (Ray) may wait longer and is left."""
    cutoff = utcnow() - timedelta(seconds=stale_after)
    recovered = []
    with catalog.session() as session:
        candidates = select(Job).where(
            (Job.state == "running") | ((Job.state == "queued") & (Job.runner == "inprocess"))
        )
        for job in session.scalars(candidates):
            heartbeat = job.heartbeat_at
            if heartbeat is not None and heartbeat.tzinfo is None:
                heartbeat = heartbeat.replace(tzinfo=cutoff.tzinfo)
            if job.state == "running" and (heartbeat is None or heartbeat < cutoff):
                job.state = "interrupted"
                job.error = "the process running this job stopped; run `kadapt jobs resume ID` to continue"
                recovered.append(job.id)
            elif job.state == "queued" and heartbeat is not None and heartbeat < cutoff:
                # queued rows without a heartbeat were created but never submitted (create_job): left alone
                job.state = "interrupted"
                job.error = "the process that queued this job stopped before it started; run `kadapt jobs resume ID`"
                recovered.append(job.id)
    return recovered


def submit(
    catalog: Catalog,
    kind: str,
    *,
    kb_id: int | None = None,
    params: dict[str, Any] | None = None,
    wait: bool = True,
    listeners: list[Callable[[JobContext], None]] | None = None,
    plugins=None,
) -> str:
    """Create a job and hand it to the configured runner (``KADAPT_JOB_RUNNER``); return its id.

    Refused before anything is written when the kind's check fails (e.g. :class:`~kadapt.errors.KBTooLarge`)
    or when ``KADAPT_MAX_CONCURRENT_JOBS`` jobs are active (:class:`~kadapt.errors.TooManyJobs`). With
    ``wait=True`` the call returns once the job has finished (whatever its state).
    """
    from kadapt.plugins import get_plugins, pick
    from kadapt.settings import get_settings

    settings = get_settings()
    name = settings.job_runner
    runner = pick((plugins or get_plugins()).job_runners(), name, "job runner", about=" (KADAPT_JOB_RUNNER)")
    check = _job_kind(kind, plugins).check
    if check is not None:
        check(catalog, **(params or {}))
    recover_interrupted(catalog, stale_after=settings.job_stale_seconds)
    job_id = uuid.uuid4().hex
    with catalog.session() as session:
        _lock_admission(session)
        _admit(session)
        # the heartbeat marks the job as handed to a runner: it holds a slot until it runs or goes stale
        session.add(Job(id=job_id, kind=kind, kb_id=kb_id, params=params or {}, runner=name, heartbeat_at=utcnow()))
    try:
        runner.submit(catalog, job_id, wait=wait, listeners=listeners)
    except Exception as exc:
        # a job its runner could not start (Ray not installed, cluster unreachable) must not stay queued
        with catalog.session() as session:
            job = session.get(Job, job_id)
            if job is not None and job.state == "queued":
                job.state, job.finished_at = "failed", utcnow()
                job.error = exc.message if isinstance(exc, KadaptError) else f"{type(exc).__name__}: {exc}"
        raise
    return job_id
