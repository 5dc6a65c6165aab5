"""Admin routes for teaching a KB to the model: augmentation and training jobs, adapters, serving mode."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from kadapt.access import kb_for_manager, kb_for_reader
from kadapt.api.deps import AdminDep, CatalogDep
from kadapt.api.schemas import JsonBody
from kadapt.modes import FineTunedMode, Mode
from kadapt.training import TrainConfig
from kadapt.views import AdapterView, JobView, KBModeView

router = APIRouter(prefix="/v1/kbs", tags=["adaptation"])


class AugmentRequest(JsonBody):
    model_config = ConfigDict(extra="forbid")

    augmenters: list[str] | None = Field(default=None, description="Augmenters to run; default all.")


class TrainRequest(JsonBody):
    model_config = ConfigDict(extra="forbid")

    mode: FineTunedMode = "ft"
    epochs: int = Field(default=TrainConfig.epochs, ge=1, le=1000, description=TrainConfig.help("epochs"))
    learning_rate: float = Field(
        default=TrainConfig.learning_rate, gt=0, lt=1, description=TrainConfig.help("learning_rate")
    )
    rank: int = Field(default=TrainConfig.rank, ge=1, le=256, description=TrainConfig.help("rank"))
    early_stop_loss: float = Field(
        default=TrainConfig.early_stop_loss, ge=0, lt=100, description=TrainConfig.help("early_stop_loss")
    )
    replay_passes: int = Field(
        default=TrainConfig.replay_passes, ge=1, le=1000, description=TrainConfig.help("replay_passes")
    )
    activate: bool = Field(default=False, description="Serve the KB from the adapter once it is ready.")
    warm_start: bool = Field(
        default=False,
        description="Continue the KB's current adapter of this mode on the documents changed since its snapshot "
        "(the unchanged ones refreshed for KADAPT_WARM_START_EPOCHS) instead of training from scratch; a full "
        "training when that cannot be (documents removed, KADAPT_WARM_START_MAX reached), and the job's result says "
        "why.",
    )


class ModeRequest(JsonBody):
    model_config = ConfigDict(extra="forbid")

    mode: Mode
    adapter: str | None = Field(default=None, description="Adapter id; default the newest ready one of that mode.")


async def start_job(catalog, kind: str, kb, params: dict[str, Any]) -> JobView:
    """Submit a job of ``kind`` on ``kb`` and answer with it as it stands (the route answers 202)."""
    from kadapt.jobs import get_job, submit

    job_id = await run_in_threadpool(submit, catalog, kind, kb_id=kb.id, params=params, wait=False)
    return JobView.of(await run_in_threadpool(get_job, catalog, job_id))


@router.post("/{slug}/augment", status_code=202)
async def augment(slug: str, body: AugmentRequest, catalog: CatalogDep, principal: AdminDep) -> JobView:
    """Start an augmentation job; follow it at ``GET /v1/jobs/{id}``."""
    kb = await run_in_threadpool(kb_for_manager, catalog, principal, slug)
    return await start_job(catalog, "augment", kb, {"kb": slug, "augmenters": body.augmenters})


@router.post("/{slug}/train", status_code=202)
async def train(slug: str, body: TrainRequest, catalog: CatalogDep, principal: AdminDep) -> JobView:
    """Start training an adapter (ft or aug-ft) on the KB's current snapshot."""
    from kadapt.adapters import train_job_params

    kb = await run_in_threadpool(kb_for_manager, catalog, principal, slug)
    config = body.model_dump(include={"epochs", "learning_rate", "rank", "early_stop_loss", "replay_passes"})
    params = train_job_params(slug, body.mode, config, activate=body.activate, warm_start=body.warm_start)
    return await start_job(catalog, "train", kb, params)


@router.get("/{slug}/adapters")
def adapters(slug: str, catalog: CatalogDep, principal: AdminDep) -> list[AdapterView]:
    """The KB's adapters, newest first, with training stats."""
    from kadapt.adapters import list_adapters

    kb = kb_for_reader(catalog, principal, slug)
    return [AdapterView.of(adapter, kb) for adapter in list_adapters(catalog, slug)]


@router.put("/{slug}/mode")
def set_mode(slug: str, body: ModeRequest, catalog: CatalogDep, principal: AdminDep) -> KBModeView:
    """Choose how the KB is served; a fine-tuned mode needs a ready adapter of that mode."""
    from kadapt.activation import set_mode as set_kb_mode

    kb_for_manager(catalog, principal, slug)
    kb = set_kb_mode(catalog, slug, body.mode, body.adapter)
    return KBModeView.of(kb)
