"""Console pages for jobs: the list, one job with its live progress and log, and cancelling."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from kadapt.access import cancel_visible_job, show_job, visible_jobs
from kadapt.jobs import TERMINAL_STATES
from kadapt.kbs import list_kbs
from kadapt.web.render import PREFIX, PageRoute, render
from kadapt.web.session import AdminUserDep, FormDep

router = APIRouter(route_class=PageRoute)


def _kb_slugs(catalog) -> dict[int, str]:
    return {kb.id: kb.slug for kb in list_kbs(catalog)}


@router.get("/jobs")
def jobs(request: Request, user: AdminUserDep) -> Response:
    """Recent jobs on KBs the user may read."""
    catalog = request.app.state.catalog
    slugs = _kb_slugs(catalog)
    rows = [job.json_data() | {"kb": slugs.get(job.kb_id)} for job in visible_jobs(catalog, user.principal, limit=200)]
    return render(request, "jobs.html.j2", user, jobs=rows)


@router.get("/jobs/{job_id}")
def job(request: Request, job_id: str, user: AdminUserDep) -> Response:
    """One job: state, progress, message, error and log; followed live while it runs."""
    catalog = request.app.state.catalog
    job = show_job(catalog, user.principal, job_id)
    row = job.json_data() | {"kb": _kb_slugs(catalog).get(job.kb_id)}
    return render(request, "job.html.j2", user, job=row, terminal=TERMINAL_STATES)


@router.get("/jobs/{job_id}/progress")
def progress(request: Request, job_id: str, user: AdminUserDep, log: bool = False) -> Response:
    """The progress panel of a job alone (with its log when ``log=1``), polled by pages while it runs."""
    row = show_job(request.app.state.catalog, user.principal, job_id).json_data()
    return render(request, "job_progress.html.j2", user, job=row, terminal=TERMINAL_STATES, show_log=log)


@router.post("/jobs/{job_id}/cancel")
def cancel(request: Request, job_id: str, user: AdminUserDep, form: FormDep) -> Response:
    """Cancel a queued or running job (a running one stops at its next progress report)."""
    cancel_visible_job(request.app.state.catalog, user.principal, job_id)
    return RedirectResponse(f"{PREFIX}/jobs/{job_id}", status_code=303)
