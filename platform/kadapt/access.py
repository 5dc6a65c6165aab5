"""Who may see and do what: a principal's rights on KBs and jobs, for every surface (API, web console, CLI).

A KB that the principal may not read is reported as not found, so that names of other groups' KBs never leak;
whoever may read a job's KB sees the job, only whoever may manage the KB cancels it and sees its error and log in
full: to the others, an error is one line that names no server path, source or traceback.
"""

from __future__ import annotations

from sqlalchemy import select

from kadapt.auth import Principal
from kadapt.catalog import Catalog, Job, KnowledgeBase
from kadapt.errors import NotFound, PermissionDenied
from kadapt.jobs import cancel_job
from kadapt.kbs import create_kb, get_kb, result_counts
from kadapt.settings import Settings
from kadapt.views import JobView

__all__ = [
    "cancel_visible_job",
    "create_kb_as",
    "job_view",
    "kb_for_manager",
    "kb_for_reader",
    "may_manage",
    "show_job",
    "visible_job",
    "visible_jobs",
]


def kb_for_reader(catalog: Catalog, principal: Principal, slug: str) -> KnowledgeBase:
    """The KB if the principal may read it; 404 otherwise, so names of other groups' KBs never leak."""
    try:
        kb = get_kb(catalog, slug)
    except NotFound:
        kb = None
    if kb is None or not principal.can_read(kb):
        raise NotFound(f"no KB named {slug!r} that you can read")
    return kb


def kb_for_manager(catalog: Catalog, principal: Principal, slug: str) -> KnowledgeBase:
    kb = kb_for_reader(catalog, principal, slug)
    if not principal.can_manage(kb):
        raise PermissionDenied(
            f"your key may read KB {slug!r} but not manage it (needs admin, or editor of an owner group)"
        )
    return kb


# what a reader of a KB (who may not manage it) is told of a job that did not succeed, instead of its error
_READER_ERRORS = {
    "failed": "the job failed; a manager of the KB (an editor of an owner group, or an admin) can see why",
    "cancelled": "the job was cancelled",
    "interrupted": "the process running the job stopped; a manager of the KB can resume it",
}


def job_view(job: Job, *, full: bool = True) -> JobView:
    """The job as the API shows it; with ``full=False`` (a reader who may not manage the job's KB) its
    error is one safe line and its log is left out."""
    if not full:
        # a failed job's last message is for the KB's managers, like its error, log and source errors
        return JobView.of(
            job,
            error=_READER_ERRORS.get(job.state) if job.error else None,
            result=result_counts(job.result),
            message="" if job.error else job.message,
        )
    return JobView.of(job)


def visible_job(catalog, principal, job_id: str) -> tuple[Job, KnowledgeBase | None]:
    """The job and its KB (None for a job of no KB); 404 unless the principal may read the KB."""
    with catalog.session() as session:
        job = session.get(Job, job_id)
        kb = session.get(KnowledgeBase, job.kb_id) if job is not None and job.kb_id is not None else None
    if job is None or (kb is not None and not principal.can_read(kb)) or (kb is None and not principal.is_admin):
        raise NotFound(f"no job {job_id!r}")
    return job, kb


def may_manage(principal, kb: KnowledgeBase | None) -> bool:
    return principal.can_manage(kb) if kb is not None else principal.is_admin


def visible_jobs(catalog: Catalog, principal: Principal, limit: int = 50) -> list[JobView]:
    """The latest ``limit`` jobs, those on KBs the principal may read (jobs of no KB: admins only), as shown to
    them."""
    with catalog.session() as session:
        rows = session.execute(
            select(Job, KnowledgeBase)
            .outerjoin(KnowledgeBase, Job.kb_id == KnowledgeBase.id)
            .order_by(Job.created_at.desc())
            .limit(limit)
        ).all()
    return [
        job_view(job, full=may_manage(principal, kb))
        for job, kb in rows
        if (kb is not None and principal.can_read(kb)) or (kb is None and principal.is_admin)
    ]


def show_job(catalog: Catalog, principal: Principal, job_id: str) -> JobView:
    """One job with its progress and log (the log and the full error only to those who manage its KB)."""
    job, kb = visible_job(catalog, principal, job_id)
    if not may_manage(principal, kb):
        return job_view(job, full=False)
    return JobView.of(job, log=job.log)


def cancel_visible_job(catalog: Catalog, principal: Principal, job_id: str) -> JobView:
    """Cancel a queued or running job (a running job stops at its next progress report); needs manage rights."""
    _, kb = visible_job(catalog, principal, job_id)
    if not may_manage(principal, kb):
        raise PermissionDenied(
            f"your key may read job {job_id}'s KB but not manage it, so it cannot cancel the job (needs admin, or "
            "editor of an owner group)"
        )
    return JobView.of(cancel_job(catalog, job_id))


def create_kb_as(
    catalog: Catalog,
    settings: Settings,
    principal: Principal,
    slug: str,
    *,
    title: str | None = None,
    base_model: str | None = None,
    reader_groups: list[str] | None = None,
    owner_groups: list[str] | None = None,
) -> KnowledgeBase:
    """Create a KB as ``principal``: an editor's KB is owned by the editor's groups unless others are given (of
    their own groups only); its model must be one the admin allows (KADAPT_DEFAULT_MODEL, KADAPT_ALLOWED_MODELS)."""
    owners = owner_groups if owner_groups is not None else sorted(principal.groups)
    if not principal.is_admin and not set(owners) & principal.groups:
        raise PermissionDenied("an editor can only create KBs owned by one of their own groups")
    # a KB's sources may reach what each of its owner groups is allowed (KADAPT_GROUP_ALLOWANCES): naming
    # another group as a co-owner would borrow that group's folders and hosts
    if not principal.is_admin and set(owners) - principal.groups:
        others = ", ".join(sorted(set(owners) - principal.groups))
        raise PermissionDenied(
            f"an editor can only name owner groups they belong to, not {others}; ask an admin to add other groups"
        )
    kb = create_kb(
        catalog,
        slug,
        title=title,
        base_model=base_model,
        reader_groups=reader_groups,
        owner_groups=owners,
        settings=settings,
        can_see=principal.can_read,
    )
    return kb


def notify_source(catalog: Catalog, principal: Principal, source_id: int) -> str:
    """A push-style source's change notification (a webhook): the id of the sync job of its KB that will read
    the change, incremental as every sync. A sync of the KB under way is asked to sync again once done (it may
    have read the source before the change); one waiting to run takes the change as it is; else a sync is
    queued. A source of a KB the caller may not read is reported missing, as one that does not exist; a reader
    of the KB who may not manage it is refused."""
    from kadapt.catalog import Source
    from kadapt.jobs import recover_interrupted, submit
    from kadapt.settings import get_settings

    with catalog.session() as session:
        source = session.get(Source, source_id)
        kb = session.get(KnowledgeBase, source.kb_id) if source is not None else None
    if kb is None or not principal.can_read(kb):
        raise NotFound(f"no source {source_id} that you can manage")
    kb = kb_for_manager(catalog, principal, kb.slug)
    recover_interrupted(catalog, stale_after=get_settings().job_stale_seconds)  # a dead sync takes no change
    with catalog.session() as session:
        pending = session.scalars(
            select(Job)
            .where(Job.kb_id == kb.id, Job.kind == "sync", Job.state.in_(("queued", "running")))
            .order_by(Job.created_at)
        ).all()
        for job in pending:
            if job.state == "running":
                job.params = {**job.params, "notifications": int(job.params.get("notifications") or 0) + 1}
                return job.id
        for job in pending:
            if job.heartbeat_at is not None:  # handed to a runner: it will run
                return job.id
    return submit(catalog, "sync", kb_id=kb.id, params={"kb": kb.slug}, wait=False)
