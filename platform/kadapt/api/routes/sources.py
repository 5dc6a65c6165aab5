"""Push-style sources: a change notification (a webhook) queues an incremental sync of the source's KB."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from kadapt.access import notify_source
from kadapt.api.deps import AdminDep, CatalogDep
from kadapt.views import JobView

router = APIRouter(prefix="/v1/sources", tags=["knowledge bases"])


@router.post("/{source_id}/notify", status_code=202)
async def notify(
    source_id: Annotated[int, Path(ge=1, le=2**31 - 1, description="The source's id.")],
    catalog: CatalogDep,
    principal: AdminDep,
) -> JobView:
    """A source's content changed (a webhook from a wiki, a drive or a bucket): queue an incremental sync of its
    KB and answer its job (follow it at ``GET /v1/jobs/{id}``). A sync of the KB under way syncs again once done
    (it may have read the source before the change), and one waiting to run takes the change: their job is
    answered. Managers of the KB only (an admin key, or an editor key of an owner group)."""
    from kadapt.jobs import get_job

    job_id = await run_in_threadpool(notify_source, catalog, principal, source_id)
    return JobView.of(await run_in_threadpool(get_job, catalog, job_id))
