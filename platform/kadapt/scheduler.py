"""Scheduled syncs: each source's ``schedule`` (a cron expression, read by croniter) runs as an ordinary sync job.

A source with a schedule carries ``next_sync_at``, the next moment it is due. :func:`run_due` — called every
``KADAPT_SCHEDULER_TICK_SECONDS`` by each API process's :class:`Scheduler` (``kadapt serve``), or once by
``kadapt schedule run`` from a system cron — submits one sync job per KB with due sources, and moves their
``next_sync_at`` to the schedule's next moment after now:

- **Once, with several API replicas.** A due source is claimed by a conditional UPDATE (``next_sync_at`` still
  the value this process read): of two processes racing on one catalog, SQLite or PostgreSQL, exactly one
  claims it and submits the sync; the other's UPDATE matches no row.
- **A missed run is run once.** After a restart (or any pause) a source whose moment passed is due: it is
  synced once, and its next moment is counted from now, not from the missed ones.
- **One sync of a KB at a time.** A KB whose lock is held (a sync running, a deletion) keeps its due sources
  due: they are synced at the first tick after it is free, once.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from kadapt.catalog import Catalog, KnowledgeBase, Source, utcnow
from kadapt.catalog.models import utc
from kadapt.errors import KadaptError, RetryLater
from kadapt.schedules import next_sync
from kadapt.settings import Settings

__all__ = ["ScheduledSync", "Scheduler", "retrain_if_due", "run_due"]

_logger = logging.getLogger(__name__)


@dataclass
class ScheduledSync:
    """What one tick did for one KB: the sync job it submitted (or why none), and the sources that were due."""

    kb: str
    sources: list[int]
    job_id: str | None = None
    deferred: str | None = None  # why the due sources stay due (the KB is busy, too many jobs)


def _due(catalog: Catalog, now: datetime) -> dict[tuple[str, int], list[tuple[int, datetime]]]:
    """(KB slug, KB id) -> [(source id, the next_sync_at read)] of the sources due at ``now``."""
    with catalog.session() as session:
        rows = session.execute(
            select(Source.id, Source.next_sync_at, KnowledgeBase.slug, KnowledgeBase.id.label("kb_id"))
            .join(KnowledgeBase, KnowledgeBase.id == Source.kb_id)
            .where(Source.schedule.is_not(None), Source.next_sync_at.is_not(None), Source.next_sync_at <= now)
            .order_by(KnowledgeBase.slug, Source.id)
        )
        due: dict[tuple[str, int], list[tuple[int, datetime]]] = {}
        for row in rows:
            due.setdefault((row.slug, row.kb_id), []).append((row.id, row.next_sync_at))
        return due


def _claim(catalog: Catalog, source_id: int, read: datetime, now: datetime) -> datetime | None:
    """Move a due source's next_sync_at past ``now`` (and the present: an earlier KB's sync may have taken long) if
    it is still ``read``; the new value, or None when another process claimed it first (or its schedule changed)."""
    with catalog.session() as session:
        source = session.get(Source, source_id)
        if source is None or not source.schedule:
            return None
        following = next_sync(source.schedule, max(now, utcnow()))
        claimed = session.execute(
            update(Source)
            .where(Source.id == source_id, Source.next_sync_at == read)
            .values(next_sync_at=following)
            .execution_options(synchronize_session=False)
        )
        return following if claimed.rowcount == 1 else None


def _unclaim(catalog: Catalog, source_id: int, read: datetime, claimed: datetime) -> None:
    """Put a claimed source back to due (its sync could not be submitted), unless it changed since."""
    with catalog.session() as session:
        session.execute(
            update(Source)
            .where(Source.id == source_id, Source.next_sync_at == claimed)
            .values(next_sync_at=read)
            .execution_options(synchronize_session=False)
        )


def run_due(catalog: Catalog, now: datetime | None = None, *, wait: bool = False, plugins=None) -> list[ScheduledSync]:
    """Submit a sync job for every KB that has sources due at ``now`` (default: the present), claiming them so
    that no other process does (see the module's docstring); what was done, per KB. ``wait``: each sync has
    finished when this returns (a process that exits after it, e.g. ``kadapt schedule run``)."""
    from kadapt.jobs import submit

    now = utc(now or utcnow())
    done = []
    for (slug, kb_id), sources in _due(catalog, now).items():
        outcome = ScheduledSync(slug, [source_id for source_id, _ in sources])
        claims = []
        for source_id, read in sources:
            claimed = _claim(catalog, source_id, read, now)
            if claimed is not None:
                claims.append((source_id, read, claimed))
        if not claims:
            continue  # another process claimed them: it submits the sync
        outcome.sources = [source_id for source_id, _, _ in claims]
        try:
            outcome.job_id = submit(
                catalog,
                "sync",
                kb_id=kb_id,
                params={"kb": slug, "scheduled": outcome.sources},
                wait=wait,
                plugins=plugins,
            )
        except Exception as exc:  # noqa: BLE001 - whatever stopped it, the due run is not lost: due at the next tick
            for source_id, read, claimed in claims:
                _unclaim(catalog, source_id, read, claimed)
            outcome.deferred = exc.message if isinstance(exc, KadaptError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, RetryLater):  # the KB is busy or too many jobs run: expected, not worth a trace
                _logger.warning("the scheduled sync of %s could not start", slug, exc_info=True)
        done.append(outcome)
    return done


def retrain_if_due(catalog: Catalog, slug: str, settings: Settings) -> tuple[str | None, str]:
    """Start training the KB's adapter again when it is due (``KADAPT_SCHEDULED_RETRAIN``, after a scheduled sync):
    the KB is served in ft or aug-ft, its documents changed since the adapter's snapshot, and that delta is stale
    (:meth:`kadapt.delta.Delta.stale`) or the adapter is older than the retrain cadence its decision planned
    (:func:`kadapt.costs.plan_upkeep`). The train job warm-starts from the adapter and serves the new one once
    ready. (The train job id or None, and why.)"""
    from datetime import timedelta

    from kadapt.adapters import active_adapter, new_adapter_id
    from kadapt.delta import adapter_delta
    from kadapt.jobs import submit
    from kadapt.kbs import get_kb, latest_decision
    from kadapt.modes import FINE_TUNED_MODES
    from kadapt.training import TrainConfig

    kb = get_kb(catalog, slug)
    adapter = active_adapter(catalog, kb)
    if adapter is None or kb.active_mode not in FINE_TUNED_MODES:
        return None, f"KB {slug!r} is served in {kb.active_mode}, not from an adapter it trains (ft, aug-ft)"
    training = _training_now(catalog, kb.id)
    if training:  # one retrain at a time: a second from the same parent could replace a newer adapter when it ends
        return None, f"{training} is under way"
    delta = adapter_delta(catalog, adapter)
    if delta.empty:
        return None, f"adapter {adapter.id} knows the current documents"
    decision = latest_decision(catalog, slug)
    plans = {
        row["mode"]: row.get("upkeep") or {} for row in (decision.estimates if decision else {}).get("estimates", [])
    }
    cadence = plans.get(kb.active_mode, {}).get("cadence_days")
    ready = utc(adapter.ready_at) if adapter.ready_at else None
    overdue = bool(cadence and ready and utcnow() - ready >= timedelta(days=cadence))
    if not (delta.stale(settings) or overdue):
        return None, f"the delta ({delta.share:.0%} of the documents) is not stale and no retrain is due yet"
    config = {key: value for key, value in adapter.config.items() if key in TrainConfig.__dataclass_fields__}
    if adapter.config.get("augmenters") is not None:
        config["augmenters"] = adapter.config["augmenters"]
    params = {"kb": slug, "mode": kb.active_mode, "adapter_id": new_adapter_id(), "config": config}
    params |= {"activate": True, "warm_start": True}
    why = "its delta is stale" if delta.stale(settings) else f"its retrain cadence ({cadence:g} days) has passed"
    return submit(catalog, "train", kb_id=kb.id, params=params, wait=False), why


def _training_now(catalog: Catalog, kb_id: int) -> str | None:
    """The KB's train or adapt job that is queued or running (named), or None. (An adapter left in state training
    by a job that died does not count: its job is interrupted, and resumed or not by someone.)"""
    from kadapt.catalog import Job

    with catalog.session() as session:
        job = session.scalar(
            select(Job.id).where(
                Job.kb_id == kb_id, Job.kind.in_(("train", "adapt")), Job.state.in_(("queued", "running"))
            )
        )
    return f"job {job} (training)" if job is not None else None


class Scheduler:
    """Runs :func:`run_due` every ``KADAPT_SCHEDULER_TICK_SECONDS`` in a daemon thread, until :meth:`stop`.

    Every API process may run one: the claims make each due sync run once. A tick that fails is logged and the
    next one tries again; the scheduler never stops the server."""

    def __init__(self, catalog: Catalog, settings: Settings, plugins=None) -> None:
        self.catalog, self.settings, self.plugins = catalog, settings, plugins
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kadapt-scheduler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for outcome in run_due(self.catalog, plugins=self.plugins):
                    if outcome.job_id:
                        _logger.info(
                            "scheduled sync of %s (sources %s): job %s", outcome.kb, outcome.sources, outcome.job_id
                        )
                    elif outcome.deferred:
                        _logger.info("scheduled sync of %s deferred: %s", outcome.kb, outcome.deferred)
            except Exception:  # noqa: BLE001 - a failing tick is retried at the next; the server goes on
                _logger.warning(
                    "the scheduler's tick failed; retrying in %ss", self.settings.scheduler_tick_seconds, exc_info=True
                )
            self._stop.wait(self.settings.scheduler_tick_seconds)
