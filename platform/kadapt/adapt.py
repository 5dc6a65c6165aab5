"""The adapt loop: sync -> probes -> pilot -> decide -> train the chosen mode on the full KB -> activate ->
report, as one call (``kadapt adapt``, the ``adapt`` job)."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from kadapt.catalog import Catalog
from kadapt.costs import Workload
from kadapt.jobs import JobContext
from kadapt.kbs import get_kb, latest_snapshot
from kadapt.pilot import kb_adapter, recipe_config, run_pilot, training_config
from kadapt.policy import check_adaptable, check_policy, decide_kb
from kadapt.report import write_kb_report
from kadapt.settings import Settings, get_settings

__all__ = ["adapt_kb"]


def adapt_kb(
    catalog: Catalog,
    slug: str,
    *,
    sample_size: int | None = None,
    train: dict[str, Any] | None = None,
    policy: str | None = None,
    context: JobContext | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """sync -> probes -> pilot -> decide -> train the chosen mode on the full KB -> activate -> report.

    Every stage is idempotent (incremental sync, carried-over probes, stored pilot evaluations, resumable
    training), so a job interrupted anywhere picks up where it stopped when run again."""
    from kadapt.activation import set_mode
    from kadapt.kbs import list_sources
    from kadapt.modes import ADAPTER_MODES, trained_mode
    from kadapt.probes import generate_probes
    from kadapt.sync import sync_kb

    settings, kb = settings or get_settings(), get_kb(catalog, slug)
    check_policy(policy or kb.policy, Workload.from_dict(kb.workload))
    check_adaptable(catalog, slug, policy, settings)
    stages: dict[str, float] = {}

    def stage(name: str, function, *args, **kwargs):
        if context:
            context.log(f"stage {name}")
            context.progress(message=name)
        started = time.perf_counter()
        value = function(*args, **kwargs)
        stages[name] = round(time.perf_counter() - started, 1)
        return value

    if list_sources(catalog, slug):
        stage("sync", sync_kb, catalog, slug, settings=settings)
    stage("probes", generate_probes, catalog, slug, imported_only=True, settings=settings)
    estimates = stage(
        "pilot", run_pilot, catalog, slug, sample_size=sample_size, train=train, context=context, settings=settings
    )
    decision = stage("decide", decide_kb, catalog, slug, estimates=estimates, policy=policy, context=context)
    adapter_id = None
    if decision.mode in ADAPTER_MODES:  # aug-ft+rag serves the aug-ft adapter
        trained = trained_mode(decision.mode)
        adapter_id = stage("train", _full_adapter, catalog, kb, trained, estimates, train, context, settings)
    stage("activate", set_mode, catalog, slug, decision.mode, adapter_id)
    html, json_path = stage("report", write_kb_report, catalog, slug, settings)
    return {
        "kb": slug,
        "mode": decision.mode,
        "policy": decision.policy,
        "decision": decision.id,
        "adapter": adapter_id,
        "break_even": decision.break_even,
        "report": str(html),
        "report_json": str(json_path),
        "stage_seconds": stages | {f"pilot:{k}": v for k, v in estimates.get("stage_seconds", {}).items()},
        "pilot_seconds": _pilot_seconds(estimates),
        "rationale": decision.rationale,
    }


def _pilot_seconds(estimates: dict) -> dict[str, dict[str, float]]:
    """Where each pilot mode's time went: augmentation, training, MC scoring, served answers, forgetting."""
    details = estimates.get("details", {})
    return {
        mode: row["seconds_by_part"]
        for mode, row in details.items()
        if isinstance(row, dict) and row.get("seconds_by_part")
    }


def _full_adapter(catalog, kb, mode, estimates, train, context, settings) -> str:
    """The chosen mode's adapter on the full KB: the pilot's when it ran on the whole KB; else the one
    already trained for this snapshot and config, resumed if interrupted, or a new one."""
    from kadapt.augment import augment_kb

    detail = estimates["details"].get(mode, {})
    if estimates["pilot"]["whole_kb"] and detail.get("adapter"):
        return detail["adapter"]
    recipe = detail.get("recipe")  # the augmentation recipe the pilot chose, when it compared several
    if mode == "aug-ft":
        augment_kb(catalog, kb.slug, names=recipe or settings.adapt_augmenters, settings=settings)
    snapshot = latest_snapshot(catalog, kb.id)
    config = asdict(training_config(settings, train)) | recipe_config(recipe)
    return kb_adapter(catalog, kb, snapshot, mode, config, context)[0]
