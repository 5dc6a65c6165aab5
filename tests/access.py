"""What the access-control tests share: a KB to aim at, and routes filled in for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def guarded_kb(catalog, settings, slug: str, docs: Path) -> dict[str, str]:
    """KB ``slug`` read by "staff" and owned by "hr" (see ``tests.conftest.PRINCIPALS``), with a files source
    over ``docs``, a queued job and a decision, so every route has a target; the names a route path needs."""
    from kadapt.jobs import create_job
    from kadapt.kbs import add_source, create_kb
    from kadapt.policy import decide_kb
    from tests.estimates import make_estimates

    kb = create_kb(catalog, slug, reader_groups=["staff"], owner_groups=["hr"])
    source = add_source(catalog, settings, slug, "files", {"path": str(docs)})
    job = create_job(catalog, "sync", kb_id=kb.id, params={"kb": slug})
    decide_kb(catalog, slug, estimates=make_estimates())
    return {"kb": slug, "source": str(source.id), "job": job, "docs": str(docs)}


def fill(value: Any, names: dict[str, str]) -> Any:
    """``value`` (a path or a JSON body) with every ``{name}`` replaced from ``names``."""
    if isinstance(value, str):
        for key, replacement in names.items():
            value = value.replace("{" + key + "}", replacement)
        return value
    if isinstance(value, dict):
        return {key: fill(item, names) for key, item in value.items()}
    if isinstance(value, list):
        return [fill(item, names) for item in value]
    return value
