"""Liveness and the models this process holds."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from kadapt import __version__
from kadapt.api.deps import PoolDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(pool: PoolDep) -> dict[str, Any]:
    """Liveness, plus each loaded model and how many instances of it this process ever created."""
    return {
        "status": "ok",
        "version": __version__,
        "models": [
            {"id": spec, "instances": getattr(type(model), "instances", 1)} for spec, model in pool.loaded().items()
        ],
    }
