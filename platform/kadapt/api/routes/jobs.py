"""Admin routes for jobs: list, progress, cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from kadapt.api.deps import AdminDep, CatalogDep
from kadapt.catalog import Job, KnowledgeBase
from kadapt.errors import NotFound
from kadapt.jobs import cancel_job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def job_json(job: Job) -> dict[str, Any]:
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


def _visible_job(catalog, principal, job_id: str) -> Job:
    with catalog.session() as session:
        job = session.get(Job, job_id)
        kb = session.get(KnowledgeBase, job.kb_id) if job is not None and job.kb_id is not None else None
    if job is None or (kb is not None and not principal.can_read(kb)) or (kb is None and not principal.is_admin):
        raise NotFound(f"no job {job_id!r}")
    return job


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
        job_json(job)
        for job, kb in rows
        if (kb is not None and principal.can_read(kb)) or (kb is None and principal.is_admin)
    ]


@router.get("/{job_id}")
def show(job_id: str, catalog: CatalogDep, principal: AdminDep) -> dict[str, Any]:
    """One job with its progress and log."""
    job = _visible_job(catalog, principal, job_id)
    return job_json(job) | {"log": job.log}


@router.post("/{job_id}/cancel")
def cancel(job_id: str, catalog: CatalogDep, principal: AdminDep) -> dict[str, Any]:
    """Cancel a queued or running job (a running job stops at its next progress report)."""
    _visible_job(catalog, principal, job_id)
    return job_json(cancel_job(catalog, job_id))
