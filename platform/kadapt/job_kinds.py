"""kadapt's own kinds of background job, registered through the ``register_job_kinds`` hook.

Each kind is a :class:`~kadapt.jobs.JobKind`: the function a runner calls with the job's
:class:`~kadapt.jobs.JobContext` and parameters, and an optional check that :func:`kadapt.jobs.submit` runs
before the job is created (so a job that cannot succeed is refused at once, and no failed job is left behind).
The job engine (:mod:`kadapt.jobs`) knows none of them: it asks the plugins, so it imports nothing above it.

    sync      ingest a KB's sources, re-decide after a new snapshot (:func:`kadapt.sync.sync_kb`)
    augment   write augmentations (:func:`kadapt.augment.augment_kb`)
    probe     write held-out probes (:func:`kadapt.probes.generate_probes`)
    train     train an adapter (:func:`kadapt.adapters.train_kb`)
    evaluate  pilot + decision (:func:`kadapt.pilot.run_pilot`, :func:`kadapt.policy.decide_kb`)
    adapt     the whole loop (:func:`kadapt.adapt.adapt_kb`)
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from kadapt.catalog import Catalog, Job
from kadapt.errors import InvalidInput, KadaptError
from kadapt.hookspecs import hookimpl
from kadapt.jobs import JobContext, JobKind

__all__ = ["BUILTIN_JOB_KINDS", "register_job_kinds"]


class PartialSync(KadaptError):
    """A sync that finished with some sources failing: the job fails, and its result still counts what was done."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__("; ".join(result["source_errors"]))
        self.result = result


def check_sync(catalog: Catalog, kb: str, **_: Any) -> None:
    """Refuse a sync of a KB whose lock is held (a sync running, a deletion) before any job is created; two
    submitted at the same moment both pass, and the second then fails at its start with the same message."""
    from kadapt.kbs import get_kb, kb_busy
    from kadapt.locks import holder, kb_lock
    from kadapt.settings import get_settings

    row = get_kb(catalog, kb)
    owner = holder(catalog, kb_lock(row.id))
    if owner is not None:
        raise kb_busy(row, owner, get_settings())


def sync_job(
    context: JobContext, kb: str, scheduled: list[int] | None = None, notifications: int = 0
) -> dict[str, Any]:
    """``scheduled``: the sources whose schedule started the sync (:mod:`kadapt.scheduler`); every source syncs.
    ``notifications``: changes notified while the job ran (``POST /v1/sources/{id}/notify`` counts them in its
    params); when one came in during a sync, the KB is synced again (at most ``_NOTIFIED_RESYNCS`` times)."""
    from kadapt.settings import get_settings
    from kadapt.sync import sync_kb

    stats = sync_kb(context.catalog, kb, context=context)
    for _ in range(_NOTIFIED_RESYNCS):
        notified = _notifications(context)
        if notified <= notifications:
            break
        notifications = notified
        context.log("a source notified a change while the sync ran: syncing again")
        stats = sync_kb(context.catalog, kb, context=context)
    result = asdict(stats) | {"notifications": notifications}
    if scheduled and stats.snapshot_created and get_settings().scheduled_retrain:
        from kadapt.scheduler import retrain_if_due

        try:
            result["retrain_job"], why = retrain_if_due(context.catalog, kb, get_settings())
            context.log(
                f"retraining: job {result['retrain_job']} ({why})" if result["retrain_job"] else f"no retrain: {why}"
            )
        except KadaptError as exc:  # the sync succeeded; a retrain that cannot start is reported, not fatal
            context.log(f"could not start a retrain: {exc.message}")
    if stats.source_errors:
        raise PartialSync(result)
    return result


_NOTIFIED_RESYNCS = 3


def _notifications(context: JobContext) -> int:
    """The changes notified to the job so far (its params, which a notification updates while it runs)."""
    with context.catalog.session() as session:
        job = session.get(Job, context.job_id)
        return int((job.params or {}).get("notifications") or 0) if job is not None else 0


def check_augment(catalog: Catalog, kb: str, **_: Any) -> None:
    from kadapt.kb_limits import check_mode

    check_mode(catalog, kb, "aug-ft")


def augment_job(context: JobContext, kb: str, augmenters: list[str] | None = None) -> dict[str, Any]:
    from kadapt.augment import augment_kb

    return augment_kb(context.catalog, kb, names=augmenters, context=context)


def probe_job(context: JobContext, kb: str, generators: list[str] | None = None) -> dict[str, Any]:
    from kadapt.probes import generate_probes

    return generate_probes(context.catalog, kb, names=generators, context=context)


def check_train(catalog: Catalog, kb: str, mode: str, **_: Any) -> None:
    from kadapt.kb_limits import check_mode
    from kadapt.modes import FINE_TUNED_MODES

    if mode not in FINE_TUNED_MODES:
        raise InvalidInput(f"mode {mode!r} trains no adapter; use one of {', '.join(FINE_TUNED_MODES)}")
    check_mode(catalog, kb, mode)


def train_job(
    context: JobContext,
    kb: str,
    mode: str,
    adapter_id: str,
    config: dict[str, Any] | None = None,
    activate: bool = False,
    warm_start: bool = False,
) -> dict[str, Any]:
    from kadapt.activation import set_mode
    from kadapt.adapters import train_kb

    result = train_kb(
        context.catalog, kb, mode, adapter_id=adapter_id, config=config, context=context, warm_start=warm_start
    )
    if activate:
        set_mode(context.catalog, kb, mode, adapter_id)
    return result | {"activated": activate}


def check_adapt(catalog: Catalog, kb: str, **params: Any) -> None:
    from kadapt.policy import check_adaptable

    check_adaptable(catalog, kb, **params)


def evaluate_job(context: JobContext, kb: str, sample_size: int | None = None, train: dict | None = None) -> dict:
    from kadapt.pilot import run_pilot
    from kadapt.policy import decide_kb
    from kadapt.views import DecisionView

    estimates = run_pilot(context.catalog, kb, sample_size=sample_size, train=train, context=context)
    decision = decide_kb(context.catalog, kb, estimates=estimates, context=context)
    decision_data = DecisionView.of(decision).json_data()
    return {"decision": decision_data, "pilot": estimates["pilot"], "warnings": estimates["warnings"]}


def adapt_job(
    context: JobContext, kb: str, sample_size: int | None = None, train: dict | None = None, policy: str | None = None
) -> dict:
    from kadapt.adapt import adapt_kb

    return adapt_kb(context.catalog, kb, sample_size=sample_size, train=train, policy=policy, context=context)


BUILTIN_JOB_KINDS = (
    JobKind("sync", sync_job, check_sync),
    JobKind("augment", augment_job, check_augment),
    JobKind("probe", probe_job),
    JobKind("train", train_job, check_train),
    JobKind("evaluate", evaluate_job, check_adapt),
    JobKind("adapt", adapt_job, check_adapt),
)


@hookimpl
def register_job_kinds(register) -> None:
    for kind in BUILTIN_JOB_KINDS:
        register(kind)
