"""Decisions and the cost/generalization report: the latest decision, the adapt and evaluate jobs, the
workload, and the report as a page (``/reports/{kb}``) and as JSON."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from pydantic import ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from kadapt.access import kb_for_manager, kb_for_reader
from kadapt.api.deps import AdminDep, CatalogDep, PrincipalDep, StoreDep
from kadapt.api.routes.adapt import start_job
from kadapt.api.schemas import JsonBody
from kadapt.costs import MAX_BUDGET_USD, MAX_HORIZON_DAYS, MAX_QUERIES_PER_DAY
from kadapt.modes import Mode
from kadapt.report import Report
from kadapt.views import DecisionView, JobView, KBWithDecision

router = APIRouter(tags=["decisions"])


class AdaptRequest(JsonBody):
    model_config = ConfigDict(extra="forbid")

    sample_size: int | None = Field(default=None, ge=1, description="Documents in the pilot sample.")
    epochs: int | None = Field(default=None, ge=1, le=1000)
    learning_rate: float | None = Field(default=None, gt=0, lt=1)
    policy: str | None = Field(default=None, description="Policy for this run; default the KB's.")


class WorkloadRequest(JsonBody):
    model_config = ConfigDict(extra="forbid")

    queries_per_day: float | None = Field(default=None, ge=0, le=MAX_QUERIES_PER_DAY)
    horizon_days: float | None = Field(default=None, gt=0, le=MAX_HORIZON_DAYS)
    accuracy_floor: float | None = Field(default=None, ge=0, le=1)
    kinds: list[str] | None = None
    budget_usd: float | None = Field(default=None, ge=0, le=MAX_BUDGET_USD)
    answer_tokens: int | None = Field(default=None, ge=1, le=4096)
    mode: Mode | None = None
    policy: str | None = None


def _params(slug: str, body: AdaptRequest) -> dict:
    train = {key: value for key, value in (("epochs", body.epochs), ("learning_rate", body.learning_rate)) if value}
    return {"kb": slug, "sample_size": body.sample_size, "train": train or None}


@router.post("/v1/kbs/{slug}/adapt", status_code=202)
async def adapt(slug: str, body: AdaptRequest, catalog: CatalogDep, principal: AdminDep) -> JobView:
    """Run the whole loop as a job: sync, probes, pilot, decide, train the chosen mode, activate, report."""
    kb = await run_in_threadpool(kb_for_manager, catalog, principal, slug)
    return await start_job(catalog, "adapt", kb, _params(slug, body) | {"policy": body.policy})


@router.post("/v1/kbs/{slug}/evaluate", status_code=202)
async def evaluate(slug: str, body: AdaptRequest, catalog: CatalogDep, principal: AdminDep) -> JobView:
    """Measure every mode on a pilot sample and record a decision, without training or activating anything."""
    kb = await run_in_threadpool(kb_for_manager, catalog, principal, slug)
    return await start_job(catalog, "evaluate", kb, _params(slug, body))


@router.put("/v1/kbs/{slug}/workload")
async def workload(slug: str, body: WorkloadRequest, catalog: CatalogDep, principal: AdminDep) -> KBWithDecision:
    """Change the KB's workload (and policy); a measured KB is re-decided at once."""
    from kadapt.kbs import latest_decision
    from kadapt.policy import set_workload

    await run_in_threadpool(kb_for_manager, catalog, principal, slug)
    changes = body.model_dump(exclude={"policy"}, exclude_none=True)
    kb = await run_in_threadpool(set_workload, catalog, slug, changes, body.policy)
    decision = await run_in_threadpool(latest_decision, catalog, slug)
    return KBWithDecision.of(kb, decision=DecisionView.of(decision) if decision else None)


@router.get("/v1/kbs/{slug}/decision")
async def decision(slug: str, catalog: CatalogDep, principal: PrincipalDep) -> DecisionView:
    """The KB's latest decision: mode, policy, break-even volumes and rationale."""
    from kadapt.errors import NotFound
    from kadapt.kbs import latest_decision

    await run_in_threadpool(kb_for_reader, catalog, principal, slug)
    row = await run_in_threadpool(latest_decision, catalog, slug)
    if row is None:
        raise NotFound(f"KB {slug!r} has no decision yet; start one with POST /v1/kbs/{slug}/adapt")
    return DecisionView.of(row)


@router.get("/v1/kbs/{slug}/report")
async def report_json(slug: str, catalog: CatalogDep, store: StoreDep, principal: PrincipalDep) -> Report:
    """The report's data: accuracy per probe kind and mode with intervals, costs, break-even, decision (without
    sample answers for a caller who may not read every document of the KB)."""
    from kadapt.report import build_report, without_samples

    kb = await run_in_threadpool(kb_for_reader, catalog, principal, slug)
    report = await run_in_threadpool(build_report, catalog, slug)
    hidden = await run_in_threadpool(store.hides_from, kb, principal.audience)
    return without_samples(report) if hidden else report


# an HTML route's declared responses default to text/html; its errors are JSON like every other route's
_JSON_ERRORS = {
    "4XX": {
        "description": "The request was refused; the message says why.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }
}


@router.get("/reports/{slug}", response_class=HTMLResponse, responses=_JSON_ERRORS)
async def report_page(slug: str, catalog: CatalogDep, store: StoreDep, principal: PrincipalDep) -> HTMLResponse:
    """The cost/generalization report as a self-contained page, for those who may read the KB."""
    from kadapt.report import render_report, report_data

    kb = await run_in_threadpool(kb_for_reader, catalog, principal, slug)
    hidden = await run_in_threadpool(store.hides_from, kb, principal.audience)
    data = await run_in_threadpool(partial(report_data, catalog, slug, hide_samples=hidden))
    html = await run_in_threadpool(render_report, data, json_href=f"/v1/kbs/{slug}/report")
    return HTMLResponse(html)
