"""The adapters a pilot trains (or reuses) and the augmentation recipes it compares."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any

from sqlalchemy import select

from kadapt.catalog import Adapter, Catalog, KnowledgeBase, Snapshot
from kadapt.errors import InvalidInput
from kadapt.jobs import JobContext
from kadapt.paths import write_atomic
from kadapt.settings import Settings


def training_config(settings: Settings, overrides: dict[str, Any] | None):
    """The LoRA training config pilots and full-KB adapters use: the defaults below, then ``overrides``."""
    from kadapt.training import TrainConfig

    # two packed rows per optimizer step: a small KB still gets several steps per epoch, which memorizing
    # facts needs more than large batches
    values = {
        "epochs": settings.adapt_epochs,
        "learning_rate": settings.adapt_learning_rate,
        "rows_per_step": 2,
        "early_stop_loss": settings.adapt_early_stop_loss,
        "replay_passes": settings.adapt_replay_passes,
    }
    return TrainConfig(**(values | (overrides or {})))


def pilot_adapter(
    catalog: Catalog,
    kb: KnowledgeBase,
    snapshot: Snapshot,
    mode: str,
    sample_ids: list[str],
    whole: bool,
    train_config,
    settings: Settings,
    context: JobContext | None,
    recipe: list[str] | None = None,
) -> tuple[str, str, dict[str, Any]]:
    """Train (or reuse) the mode's adapter on the sample; (adapter id, path, training stats). ``recipe``: only
    these augmenters' augmentations (when the pilot compares recipes).

    A whole-KB pilot trains the KB's real adapter (an Adapter row the KB can then serve); a sample's
    adapter lives under the data dir's pilots folder."""
    from kadapt.adapters import base_model_path, calibrate_routing, training_texts
    from kadapt.training import train_lora, training_data_hash

    config = asdict(train_config)
    if whole:
        return kb_adapter(catalog, kb, snapshot, mode, config | recipe_config(recipe), context)
    data = training_texts(catalog, kb, snapshot.id, mode, document_ids=sample_ids, settings=settings, augmenters=recipe)
    examples = training_data_hash(data["texts"], train_config, None, data["replay_texts"])  # the config's too
    key = (sorted(sample_ids), mode, examples) + ((recipe,) if recipe is not None else ())
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:12]
    folder = settings.data_dir / "pilots" / f"kb-{kb.id}" / f"{snapshot.id}-{mode}-{digest}"
    # the stats file is written last: without it, train_lora returns an adapter already published (a kill
    # between publishing and writing the stats) or trains/resumes one
    if not (folder / "kadapt-stats.json").is_file():
        base_path, hub_id = base_model_path(kb, settings)

        def progress(step: int, total: int, loss: float) -> None:
            if context:
                context.progress(message=f"pilot {mode}: step {step}/{total}, loss {loss:.3f}")

        result = train_lora(
            base_path,
            data["texts"],
            folder,
            train_config,
            progress=progress,
            work_dir=folder.with_name(f".work-{folder.name}"),
            base_model_name=hub_id,
            replay=data["replay_texts"],
        )
        calibrate_routing(kb, f"pilot-{kb.slug}-{folder.name}", folder, data["texts"][: data["documents"]], settings)
        write_atomic(
            folder / "kadapt-stats.json",
            json.dumps(asdict(result) | {"documents": data["documents"]}, indent=2, default=str),
        )
    stats = json.loads((folder / "kadapt-stats.json").read_text())
    return f"pilot-{kb.slug}-{folder.name}", str(folder), stats


def recipe_list(settings: Settings) -> list[list[str]]:
    """KADAPT_ADAPT_RECIPES as lists of augmenter names ('local+global' -> ['local', 'global']), duplicates out."""
    recipes: list[list[str]] = []
    for text in settings.adapt_recipes:
        recipe = list(dict.fromkeys(name.strip() for name in text.split("+") if name.strip()))
        if not recipe:
            raise InvalidInput(f"KADAPT_ADAPT_RECIPES: {text!r} names no augmenter; join names with '+'")
        if recipe not in recipes:
            recipes.append(recipe)
    return recipes


def recipe_config(recipe: list[str] | None) -> dict[str, Any]:
    """What a recipe adds to an adapter's training config (nothing when recipes are not compared)."""
    return {"augmenters": list(recipe)} if recipe is not None else {}


def mean_accuracy(by_kind: dict[str, Any]) -> float:
    """The mean of per-kind accuracies (0.0 for none): how a mode's variants are compared."""
    return sum(row["accuracy"] for row in by_kind.values()) / len(by_kind) if by_kind else 0.0


def _recipe_score(mc_by_kind: dict[str, Any], detail: dict[str, Any]) -> float:
    """How well an aug-ft recipe did: mean served accuracy over kinds, else mean MC accuracy."""
    return mean_accuracy((detail.get("served") or {}).get("by_kind") or mc_by_kind or {})


def kb_adapter(catalog: Catalog, kb, snapshot, mode: str, config: dict[str, Any], context) -> tuple[str, str, dict]:
    """The KB's adapter of ``mode`` for ``snapshot`` trained with ``config``: reused when ready, resumed
    when its training was interrupted, else trained now."""
    from kadapt.adapters import new_adapter_id, train_kb

    with catalog.session() as session:
        existing = session.scalars(
            select(Adapter)
            .where(Adapter.kb_id == kb.id, Adapter.snapshot_id == snapshot.id, Adapter.mode == mode)
            .order_by(Adapter.created_at.desc())
        ).all()
    for adapter in existing:
        if adapter.config == config and adapter.state == "ready":
            return adapter.id, adapter.path, adapter.stats
    resumable = next((a for a in existing if a.config == config and a.state == "training"), None)
    adapter_id = resumable.id if resumable else new_adapter_id()
    train_kb(catalog, kb.slug, mode, adapter_id=adapter_id, config=config, context=context)
    return _adapter_result(catalog, adapter_id)


def _adapter_result(catalog: Catalog, adapter_id: str) -> tuple[str, str, dict[str, Any]]:
    with catalog.session() as session:
        adapter = session.get(Adapter, adapter_id)
        return adapter.id, adapter.path, adapter.stats


_TRAINING_KEYS = (
    "examples", "tokens", "steps", "seconds", "tokens_per_second", "final_loss", "augmentations", "stopped_early",
)  # fmt: skip
