"""Admin routes for jobs: list, progress, cancel.

Whoever may read a job's KB sees the job; only whoever may manage the KB cancels it, and sees its error and
log in full: to the others, an error is one line that names no server path, source or traceback."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from kadapt.api.deps import AdminDep, CatalogDep
from kadapt.catalog import Job, KnowledgeBase
from kadapt.errors import NotFound, PermissionDenied
from kadapt.jobs import cancel_job
from kadapt.kbs import result_counts

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


# what a reader of a KB (who may not manage it) is told of a job that did not succeed, instead of its error
_READER_ERRORS = {
    "failed": "the job failed; a manager of the KB (an editor of an owner group, or an admin) can see why",
    "cancelled": "the job was cancelled",
    "interrupted": "the process running the job stopped; a manager of the KB can resume it",
}


def job_json(job: Job, *, full: bool = True) -> dict[str, Any]:
    """The job as the API shows it; with ``full=False`` (a reader who may not manage the job's KB) its
    error is one safe line and its log is left out."""
    if not full:
        # a failed job's last message is for the KB's managers, like its error, log and source errors
        return job_json(job) | {
            "error": _READER_ERRORS.get(job.state) if job.error else None,
            "log": None,
            "result": result_counts(job.result),
            "message": "" if job.error else job.message,
        }
    return {
        "id": job.id,
        "kind": job.kind,
        "kb_id": job.kb_id,
        "state": job.state,
        "runner": job.runner,
        "params": job.params,
        "result": job.result,
        "progress": {"done": job.progress_done, "total": job.progress_total},
        "message": job.message,
        "error": job.error,
        "attempts": job.attempts,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def _visible_job(catalog, principal, job_id: str) -> tuple[Job, KnowledgeBase | None]:
    """The job and its KB (None for a job of no KB); 404 unless the principal may read the KB."""
    with catalog.session() as session:
        job = session.get(Job, job_id)
        kb = session.get(KnowledgeBase, job.kb_id) if job is not None and job.kb_id is not None else None
    if job is None or (kb is not None and not principal.can_read(kb)) or (kb is None and not principal.is_admin):
        raise NotFound(f"no job {job_id!r}")
    return job, kb


def _may_manage(principal, kb: KnowledgeBase | None) -> bool:
    return principal.can_manage(kb) if kb is not None else principal.is_admin


@router.get("")
def list_(
    catalog: CatalogDep, principal: AdminDep, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[dict[str, Any]]:
    """Recent jobs on KBs the caller may read."""
    with catalog.session() as session:
        rows = session.execute(
            select(Job, KnowledgeBase)
            .outerjoin(KnowledgeBase, Job.kb_id == KnowledgeBase.id)
            .order_by(Job.created_at.desc())
            .limit(limit)
        ).all()
    return [
        job_json(job, full=_may_manage(principal, kb))
        for job, kb in rows
        if (kb is not None and principal.can_read(kb)) or (kb is None and principal.is_admin)
    ]


@router.get("/{job_id}")
def show(job_id: str, catalog: CatalogDep, principal: AdminDep) -> dict[str, Any]:
    """One job with its progress and log (the log and the full error only to those who manage its KB)."""
    job, kb = _visible_job(catalog, principal, job_id)
    if not _may_manage(principal, kb):
        return job_json(job, full=False)
    return job_json(job) | {"log": job.log}


@router.post("/{job_id}/cancel")
def cancel(job_id: str, catalog: CatalogDep, principal: AdminDep) -> dict[str, Any]:
    """Cancel a queued or running job (a running job stops at its next progress report); needs manage rights."""
    _, kb = _visible_job(catalog, principal, job_id)
    if not _may_manage(principal, kb):
        raise PermissionDenied(
            f"your key may read job {job_id}'s KB but not manage it, so it cannot cancel the job (needs admin, or "
            "editor of an owner group)"
        )
    return job_json(cancel_job(catalog, job_id))
