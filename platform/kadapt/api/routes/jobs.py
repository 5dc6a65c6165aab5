"""Admin routes for jobs: list, progress, cancel.

Whoever may read a job's KB sees the job; only whoever may manage the KB cancels it, and sees its error and
log in full: to the others, an error is one line that names no server path, source or traceback."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from kadapt.access import cancel_visible_job, show_job, visible_jobs
from kadapt.api.deps import AdminDep, CatalogDep
from kadapt.views import JobView

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get("")
def list_(catalog: CatalogDep, principal: AdminDep, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[JobView]:
    """Recent jobs on KBs the caller may read."""
    return visible_jobs(catalog, principal, limit)


@router.get("/{job_id}")
def show(job_id: str, catalog: CatalogDep, principal: AdminDep) -> JobView:
    """One job with its progress and log (the log and the full error only to those who manage its KB)."""
    return show_job(catalog, principal, job_id)


@router.post("/{job_id}/cancel")
def cancel(job_id: str, catalog: CatalogDep, principal: AdminDep) -> JobView:
    """Cancel a queued or running job (a running job stops at its next progress report); needs manage rights."""
    return cancel_visible_job(catalog, principal, job_id)
