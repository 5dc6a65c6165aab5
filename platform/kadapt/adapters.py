"""Per-KB adapters: training data per mode, the train job, publishing and activation."""

from __future__ import annotations

import logging
import math
import random
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from kadapt.catalog import Adapter, Catalog, Document, Job, KnowledgeBase, SnapshotDocument, utcnow
from kadapt.costs import warm_start_shape
from kadapt.errors import InvalidInput, NotFound
from kadapt.jobs import JobContext
from kadapt.kbs import get_kb, latest_snapshot
from kadapt.modes import ADAPTER_MODES, FINE_TUNED_MODES
from kadapt.readers import stored_readers
from kadapt.settings import Settings, get_settings
from kadapt.training import ChatExample, TrainConfig, train_lora

__all__ = [
    "active_adapter",
    "adapter_dir",
    "calibrate_routing",
    "list_adapters",
    "ready_adapter",
    "train_job_params",
    "train_kb",
    "training_texts",
]

_logger = logging.getLogger(__name__)


def adapter_dir(settings: Settings, kb: KnowledgeBase, adapter_id: str) -> Path:
    """Named by the KB's id, never reused: a KB never finds a deleted namesake's adapters (they go with it)."""
    return settings.data_dir / "adapters" / f"kb-{kb.id}" / adapter_id


def training_texts(
    catalog: Catalog,
    kb: KnowledgeBase,
    snapshot_id: int,
    mode: str,
    document_ids: Any = None,
    settings: Settings | None = None,
    augmenters: Sequence[str] | None = None,
    replay: int | None = None,
    need_augmentations: bool = True,
) -> dict[str, Any]:
    """The examples of a mode for a snapshot: its documents (ft), plus the augmentations still valid for it
    (aug-ft). Documents deleted or changed since an augmentation was written take it out of the data.
    ``document_ids`` limits both to a subset of the documents (a pilot sample, a warm start's); ``augmenters`` (an
    augmentation recipe) to the augmentations those augmenters wrote (default: every augmenter's); ``replay`` sets
    how many of the base model's answers join them (default ``KADAPT_ADAPT_REPLAY``). aug-ft without augmentations
    is refused unless ``need_augmentations`` is false (a warm start's replayed part).

    With ``KADAPT_ADAPT_QA_PAIRS``, chat question-answer pairs written from the documents (:mod:`kadapt.qa_pairs`)
    join them: ft the pairs in the documents' own direction, aug-ft both directions, so that the comparison of
    the two still measures what reversed data adds. With ``KADAPT_ADAPT_REPLAY``, the base model's own answers
    to generic prompts (:mod:`kadapt.replay`) do too. aug-ft's pairs are also written from its inferences (the
    ``global`` and ``chain`` augmenters' conclusions), which state what no document does (rephrasings and reversals
    restate a document, whose pairs are written already). Chat examples are prompted
    as serving prompts the KB."""
    from kadapt.augment import valid_augmentations
    from kadapt.catalog import Document

    if mode not in FINE_TUNED_MODES:
        raise InvalidInput(f"mode {mode!r} trains no adapter; use one of {', '.join(FINE_TUNED_MODES)}")
    with catalog.session() as session:
        members = select(SnapshotDocument.document_id).where(SnapshotDocument.snapshot_id == snapshot_id)
        query = select(Document.text).where(Document.id.in_(members))
        if document_ids is not None:
            query = query.where(Document.id.in_(list(document_ids)))
        documents = list(session.scalars(query.order_by(Document.id)))
    augmentations = valid_augmentations(catalog, kb.id, snapshot_id) if mode == "aug-ft" else []
    if document_ids is not None:
        chosen = set(document_ids)
        augmentations = [row for row in augmentations if set(row.source_hashes) <= chosen]
    if augmenters is not None:
        augmentations = [row for row in augmentations if row.augmenter in set(augmenters)]
    augmentations = list({row.text: row for row in augmentations}.values())  # once, if global and chain agree
    if mode == "aug-ft" and not augmentations and need_augmentations:
        raise InvalidInput(
            f"KB {kb.slug!r} has no augmentations for its current snapshot; run `kadapt augment {kb.slug}`"
        )
    kinds = dict(Counter(augmentation.kind for augmentation in augmentations))
    settings = settings or get_settings()
    replay = settings.adapt_replay if replay is None else min(replay, settings.adapt_replay)
    inferred = [row.text for row in augmentations if row.kind == "inference"]  # what no document states
    chats, pair_kinds, replayed = _chat_examples(kb, documents, mode, settings, replay, inferred)
    return {
        "texts": documents + [augmentation.text for augmentation in augmentations] + chats,
        "replay_texts": replayed,
        "documents": len(documents),
        "augmentations": kinds,
        "qa_pairs": pair_kinds,
        "replay": len(replayed),
    }


def _chat_examples(
    kb: KnowledgeBase, documents: list[str], mode: str, settings: Settings, replay: int, inferred: Sequence[str] = ()
) -> tuple[list[ChatExample], dict[str, int], list[ChatExample]]:
    """The chat examples of a mode's training data: (question-answer pairs written from ``documents`` and from the
    ``inferred`` statements, pairs per kind, the base model's replayed answers, which training spreads over the
    epochs). An inference is asked only what no document is asked: "What is a tove a kind of?" has the answer
    its document states ("snoub"), not also every ancestor the chain derives ("animal", on every member of a
    hierarchy, would crowd it out)."""
    from kadapt.prompts import adapter_system_prompt
    from kadapt.qa_pairs import pair_counts, qa_pairs

    system = adapter_system_prompt(kb)
    pairs = []
    if settings.adapt_qa_pairs:
        directions = ("forward",) if mode == "ft" else ("forward", "backward")
        pairs = qa_pairs(documents, directions)
        asked = {pair.question for pair in pairs}
        pairs += [pair for pair in qa_pairs(inferred, directions) if pair.question not in asked]
    examples = [ChatExample(system, pair.question, pair.answer) for pair in pairs]
    replayed = []
    if replay:
        from kadapt.models import get_model_pool
        from kadapt.replay import replay_answers

        def load_model():
            return get_model_pool().get(kb.base_model)

        answers = replay_answers(kb.base_model, settings, load_model, replay)
        replayed = [ChatExample(system, prompt, answer) for prompt, answer in answers]
    return examples, pair_counts(pairs), replayed


# what a train job reports of the training (besides adapter, mode and path)
TRAIN_RESULT_KEYS = (
    "examples",
    "tokens",
    "steps",
    "seconds",
    "final_loss",
    "resumed_from_step",
    "documents",
    "augmentations",
    "qa_pairs",
    "replay",
    "tokens_per_second",
)


def _seen_readers(session, kb, warm) -> dict[str, Any]:
    """The reader sets of the restricted documents the adapter learns from (its parent's too: a warm start keeps
    what the parent saw), kept with it so that it answers only a caller who may read them all, even once those
    documents are gone (kadapt.readers)."""
    metas = session.scalars(select(Document.meta).where(Document.kb_id == kb.id))
    seen = {tuple(readers) for readers in map(stored_readers, metas) if readers is not None}
    if warm is not None:
        seen |= {tuple(readers) for readers in (warm.parent.config or {}).get("readers", [])}
    return {"readers": sorted(list(readers) for readers in seen)} if seen else {}


def _record_adapter(catalog, kb, snapshot, mode, adapter_id, final_dir, config, recipe, context, warm=None) -> None:
    """The adapter's catalog row, in state training (once: a resumed training finds it)."""
    with catalog.session() as session:
        if session.get(Adapter, adapter_id) is None:
            session.add(
                Adapter(
                    id=adapter_id,
                    kb_id=kb.id,
                    snapshot_id=snapshot.id,
                    mode=mode,
                    base_model=kb.base_model,
                    path=str(final_dir),
                    config=asdict(config)
                    | ({"augmenters": list(recipe)} if recipe is not None else {})
                    | ({"warm_start": warm.stats()} if warm else {})
                    | _seen_readers(session, kb, warm),
                    job_id=context.job_id if context else None,
                    parent_id=warm.parent.id if warm else None,
                    warm_starts=warm.parent.warm_starts + 1 if warm else 0,
                )
            )


@dataclass
class WarmStart:
    """A training run that continues ``parent``'s weights on the documents that changed since its snapshot, with
    the unchanged ones (``KADAPT_WARM_START_REPLAY`` of them) refreshed; their augmentations are reused, as always."""

    parent: Adapter
    changed: list[str]  # document ids added or changed since the parent's snapshot
    replayed: list[str]  # unchanged document ids trained again, so that the adapter does not drift from them
    documents: int = 0  # the snapshot's documents

    def stats(self) -> dict[str, Any]:
        return {
            "parent": self.parent.id,
            "changed": self.changed,
            "replayed": self.replayed,
            "documents": self.documents,
        }


def _warm_parent(catalog: Catalog, kb: KnowledgeBase, mode: str) -> Adapter | None:
    """The adapter a warm start continues: the KB's active one when it is of ``mode``, else the newest ready one."""
    active = active_adapter(catalog, kb)
    if active is not None and active.mode == mode and active.state == "ready":
        return active
    with catalog.session() as session:
        query = select(Adapter).where(Adapter.kb_id == kb.id, Adapter.mode == mode, Adapter.state == "ready")
        return session.scalar(query.order_by(Adapter.ready_at.desc()).limit(1))


def plan_warm_start(
    catalog: Catalog, kb: KnowledgeBase, mode: str, snapshot_id: int, settings: Settings, seed: int = 0
) -> tuple[WarmStart | None, str]:
    """(the warm start of a ``mode`` adapter on snapshot ``snapshot_id``, None and why a full training is needed).
    InvalidInput when the adapter to start from already knows the snapshot (nothing to train)."""
    from kadapt.delta import snapshot_delta

    parent = _warm_parent(catalog, kb, mode)
    if parent is None:
        return None, f"there is no ready {mode} adapter to start from"
    if parent.snapshot_id is None:
        return None, f"the snapshot adapter {parent.id} was trained on is gone"
    if parent.warm_starts >= settings.warm_start_max:
        return None, (
            f"adapter {parent.id} is warm start {parent.warm_starts} since the last full training "
            f"(KADAPT_WARM_START_MAX={settings.warm_start_max})"
        )
    delta = snapshot_delta(catalog, kb.id, parent.snapshot_id)
    if delta.current_snapshot != snapshot_id:
        return None, "the KB changed while the warm start was planned"
    if not delta.documents and delta.removed:
        return (
            None,
            f"only removals since its snapshot ({len(delta.removed)} document(s)): a full training forgets them",
        )
    if not delta.documents:
        raise InvalidInput(
            f"adapter {parent.id} was trained on the KB's current snapshot: a warm start has nothing to learn"
        )
    with catalog.session() as session:
        members = session.scalars(
            select(SnapshotDocument.document_id).where(SnapshotDocument.snapshot_id == snapshot_id)
        )
        unchanged = sorted(set(members) - set(delta.document_ids))
    count = min(len(unchanged), math.ceil(len(unchanged) * settings.warm_start_replay))
    # a different sample at each warm start of a chain (seeded by the parent), the same when a run is planned again
    replayed = sorted(random.Random(f"{seed}:{parent.id}:{snapshot_id}").sample(unchanged, count))
    return WarmStart(parent, delta.document_ids, replayed, len(unchanged) + len(delta.document_ids)), ""


def train_kb(
    catalog: Catalog,
    slug: str,
    mode: str,
    *,
    adapter_id: str,
    config: dict[str, Any] | None = None,
    context: JobContext | None = None,
    settings: Settings | None = None,
    warm_start: bool = False,
) -> dict[str, Any]:
    """Train (or resume training) adapter ``adapter_id`` for the KB's latest snapshot and publish it.

    ``warm_start``: continue the KB's current adapter of ``mode`` (:func:`plan_warm_start`) on what changed since
    its snapshot, refreshing the unchanged documents (:func:`_warm_data`), instead of training from scratch; a full
    training is done instead (and the result says why) when there is none or it is ``KADAPT_WARM_START_MAX`` warm
    starts from its last full training. Documents removed since are not unlearnt by a warm start: chat names them as
    withdrawn until the next full training (:func:`kadapt.delta.adapter_delta`).

    A KB over the mode's size limit (``KADAPT_MAX_KB_TOKENS_FT`` / ``_AUG_FT``) is refused before anything
    is written."""
    from kadapt.kb_limits import check_mode

    settings = settings or get_settings()
    kb = get_kb(catalog, slug)
    snapshot = latest_snapshot(catalog, kb.id)
    if snapshot is None:
        raise InvalidInput(f"KB {slug!r} has no documents yet; run `kadapt sync {slug}` first")
    _check_pinned_snapshot(catalog, slug, mode, adapter_id, snapshot.id)
    if mode in FINE_TUNED_MODES:
        check_mode(catalog, kb, mode, settings)
    base_path, hub_id = base_model_path(kb, settings)
    plan = _plan_training(catalog, kb, mode, adapter_id, snapshot.id, dict(config or {}), settings, warm_start, context)
    warm, data = plan.warm, plan.data
    final_dir = adapter_dir(settings, kb, adapter_id)
    _record_adapter(catalog, kb, snapshot, mode, adapter_id, final_dir, plan.config, plan.recipe, context, warm)
    if context:
        context.log(plan.describe(mode))

    def progress(step: int, total: int, loss: float) -> None:
        if context:
            context.progress(done=step, total=total, message=f"loss {loss:.3f}")

    work_dir, init_from = final_dir.with_name(f".work-{adapter_id}"), Path(warm.parent.path) if warm else None
    result = train_lora(
        base_path, data["texts"], final_dir, plan.config, progress=progress, work_dir=work_dir,
        base_model_name=hub_id, init_from=init_from, replay=data["replay_texts"],
        refresh=data.get("refresh_texts", ()), refresh_passes=data.get("refresh_passes", 0),
    )  # fmt: skip
    stats = _publish(catalog, kb, adapter_id, final_dir, snapshot.id, result, plan, settings)
    return (
        {"adapter": adapter_id, "mode": mode, "path": str(final_dir)}
        | {key: stats[key] for key in TRAIN_RESULT_KEYS}
        | {"warm_start": _warm_summary(warm), "full_training_because": plan.full_because}
    )


def _publish(catalog, kb, adapter_id, final_dir, snapshot_id, result, plan, settings) -> dict[str, Any]:
    """Calibrate a trained adapter's routing gate and mark it ready with its stats (returned)."""
    data, warm = plan.data, plan.warm
    # the gate knows every document's names, trained now or before
    documents = _snapshot_texts(catalog, snapshot_id) if warm else data["texts"][: data["documents"]]
    calibrate_routing(kb, adapter_id, final_dir, documents, settings)
    stats = asdict(result) | {key: data[key] for key in ("documents", "augmentations", "qa_pairs", "replay")}
    stats |= {"warm_start": warm.stats() if warm else None, "full_training_because": plan.full_because}
    with catalog.session() as session:
        row = session.get(Adapter, adapter_id)
        row.state, row.stats, row.ready_at = "ready", stats, utcnow()
    return stats


@dataclass
class _TrainingPlan:
    config: TrainConfig
    recipe: list[str] | None
    data: dict[str, Any]
    warm: WarmStart | None
    full_because: str | None  # why a warm start that was asked for is a full training

    def describe(self, mode: str) -> str:
        data, warm = self.data, self.warm
        how = ""
        if warm:
            changed = (
                f"an epoch per pass over their examples; unchanged ones refreshed in {data['refresh_passes']} of those"
                if data.get("refresh_passes")
                else f"their examples x{data['warm_repeats']}"
            )
            how = (
                f"warm start from adapter {warm.parent.id} ({len(warm.changed)} changed documents, {changed}; "
                f"{len(warm.replayed)} unchanged replayed; {self.config.epochs} epochs): "
            )
        why = f"full training ({self.full_because}): " if self.full_because else ""
        return (
            f"training {mode}, {how}{why}on {len(data['texts'])} examples ({data['documents']} documents, "
            f"augmentations {data['augmentations']}, question-answer pairs {data['qa_pairs']}) and "
            f"{data['replay']} replayed answers ({self.config.replay_passes} passes over them in all)"
        )


def _plan_training(catalog, kb, mode, adapter_id, snapshot_id, config, settings, warm_start, context=None):
    """What a training run trains on and how (a :class:`_TrainingPlan`): its config, recipe, examples and warm start.
    An aug-ft warm start first augments the changed documents (the others' augmentations are reused)."""
    # an augmentation recipe (the pilot compared several) travels in the config: an adapter's config says what
    # it was trained on, and an adapter is reused or resumed only for the same config
    recipe = config.pop("augmenters", None)
    warm, why = _warm_start(catalog, kb, mode, adapter_id, snapshot_id, config, settings, warm_start)
    if warm is not None:  # the parent's LoRA shape and recipe: its weights are what training starts from
        config |= {key: warm.parent.config[key] for key in _LORA_SHAPE if key in warm.parent.config}
        recipe = recipe if recipe is not None else warm.parent.config.get("augmenters")
    if warm is not None and mode == "aug-ft":
        from kadapt.augment import augment_kb

        names = recipe or settings.adapt_augmenters
        augment_kb(catalog, kb.slug, names=names, document_ids=warm.changed, context=context, settings=settings)
    if warm is None:
        data = training_texts(catalog, kb, snapshot_id, mode, None, settings=settings, augmenters=recipe)
    else:
        data, config = _warm_data(catalog, kb, snapshot_id, mode, warm, config, settings, recipe)
    return _TrainingPlan(TrainConfig(**config), recipe, data, warm, why if warm_start and warm is None else None)


def _warm_data(catalog, kb, snapshot_id, mode, warm: WarmStart, config, settings, recipe):
    """(a warm start's examples, its training config). The changed documents are learnt as a full training learns
    them, for all its epochs; the replayed unchanged ones, which the parent knows already, are only refreshed, for
    ``KADAPT_WARM_START_EPOCHS``: the run has that many epochs, over the changed documents' examples repeated
    (``KADAPT_WARM_START_CHANGED_PASSES``, at most the training's epochs) / warm epochs times and the replayed ones
    once (``KADAPT_WARM_START_SPREAD``: warm epochs x repeats epochs, the changed examples once in each and the
    replayed ones in a moving window, warm epochs passes each). The base model's
    answers are replayed in the share of the KB it trains on (the parent learnt the rest), with the unchanged
    documents, as many times per epoch as in a full training."""
    epochs = int(config.get("epochs") or settings.adapt_epochs)
    warm_epochs, repeats = warm_start_shape(epochs, settings.warm_start_epochs, settings.warm_start_changed_passes)
    base_replay = math.ceil(settings.adapt_replay * (len(warm.changed) + len(warm.replayed)) / max(1, warm.documents))
    changed = training_texts(
        catalog, kb, snapshot_id, mode, warm.changed, settings=settings, augmenters=recipe, replay=0
    )
    replayed = training_texts(
        catalog, kb, snapshot_id, mode, warm.replayed, settings=settings, augmenters=recipe, replay=base_replay,
        need_augmentations=False,
    )  # fmt: skip
    spread = settings.warm_start_spread and repeats > 1
    data = {
        # spread: an epoch per pass over the changed examples, the unchanged ones refreshed in a moving window for
        # the warm epochs' worth of passes; else the changed examples repeated within each warm epoch (FFD packing
        # puts most copies in one optimizer step: about two in three, counted on the freshness benchmark's KBs)
        "texts": changed["texts"] if spread else changed["texts"] * repeats + replayed["texts"],
        "refresh_texts": replayed["texts"] if spread else [],
        "refresh_passes": warm_epochs if spread else 0,
        "replay_texts": replayed["replay_texts"],
        "documents": changed["documents"] + replayed["documents"],
        "augmentations": _add_counts(changed["augmentations"], replayed["augmentations"]),
        "qa_pairs": _add_counts(changed["qa_pairs"], replayed["qa_pairs"]),
        "replay": replayed["replay"],
        "warm_repeats": repeats,
    }
    # the base model's answers at a full training's rate per epoch, rounded up: they keep the unchanged facts
    # (bench/freshness.py: at 6 of 20 epochs, 2 passes kept 16/26 unchanged facts, 1 pass 10/26; at 5 of 20, three
    # seeds, 2 passes 30/78, the 1.5 of the exact rate 22/78)
    passes = int(config.get("replay_passes") or TrainConfig().replay_passes)
    replay_passes = max(1, math.ceil(passes * warm_epochs / epochs))
    return data, config | {"epochs": warm_epochs * repeats if spread else warm_epochs, "replay_passes": replay_passes}


def _add_counts(left: dict[str, int], right: dict[str, int]) -> dict[str, int]:
    return {key: left.get(key, 0) + right.get(key, 0) for key in sorted(set(left) | set(right))}


_LORA_SHAPE = ("rank", "alpha", "dropout", "target_modules")


def _warm_start(catalog, kb, mode, adapter_id, snapshot_id, config, settings, wanted) -> tuple[WarmStart | None, str]:
    """The warm start of this run: planned once, and read back from the adapter's row when the run is resumed (the
    KB's active adapter may have changed in between)."""
    if not wanted:
        return None, ""
    with catalog.session() as session:
        row = session.get(Adapter, adapter_id)
        if row is not None:  # a resumed run: the plan it began with
            planned = row.config.get("warm_start")
            if not planned:
                return None, "the interrupted run this resumes was a full training"
            parent = session.get(Adapter, planned["parent"])
            if parent is None:
                raise InvalidInput(f"adapter {adapter_id}: the adapter it continues, {planned['parent']}, is gone")
            return WarmStart(parent, planned["changed"], planned["replayed"], planned.get("documents", 0)), ""
    return plan_warm_start(catalog, kb, mode, snapshot_id, settings, seed=int(config.get("seed", 0)))


def _warm_summary(warm: WarmStart | None) -> dict[str, Any] | None:
    if warm is None:
        return None
    return {"parent": warm.parent.id, "changed": len(warm.changed), "replayed": len(warm.replayed)}


def _snapshot_texts(catalog: Catalog, snapshot_id: int) -> list[str]:
    from kadapt.catalog import Document

    with catalog.session() as session:
        members = select(SnapshotDocument.document_id).where(SnapshotDocument.snapshot_id == snapshot_id)
        return list(session.scalars(select(Document.text).where(Document.id.in_(members)).order_by(Document.id)))


def calibrate_routing(
    kb: KnowledgeBase, adapter_id: str, path: Path, documents: list[str], settings: Settings | None = None
) -> None:
    """Write a trained adapter's routing gate (:mod:`kadapt.routing`): its threshold and ``documents``' names.
    Best effort: nothing with routing off or where the KB's base model cannot score, and a failure is logged (an
    adapter without a gate is calibrated at its first question, without names) — the adapter is trained either way."""
    from kadapt.models import ScoringNotSupported, get_model_pool
    from kadapt.prompts import adapter_system_prompt
    from kadapt.routing import calibrate

    if not (settings or get_settings()).adapter_routing:
        return
    try:
        model = get_model_pool().get(kb.base_model)
        calibrate(model, adapter_id, str(path), adapter_system_prompt(kb), documents)
    except ScoringNotSupported:
        pass
    except Exception:  # noqa: BLE001 - routing is an optimisation of answers, never a reason to lose an adapter
        _logger.warning(
            "could not calibrate routing for adapter %s; it is calibrated at its first question",
            adapter_id,
            exc_info=True,
        )


def _check_pinned_snapshot(catalog: Catalog, slug: str, mode: str, adapter_id: str, snapshot_id: int) -> None:
    """A resumed training run stays on the snapshot it began with: when the KB has moved on (a sync since),
    its adapter is marked failed and the run refused, rather than mixing two snapshots' data in one adapter.
    (The catalog keeps only the current documents, so the old snapshot's data cannot be assembled again.)"""
    with catalog.session() as session:
        adapter = session.get(Adapter, adapter_id)
        if adapter is None or adapter.snapshot_id == snapshot_id:
            return
        began_on = adapter.snapshot_id
        adapter.state = "failed"
    raise InvalidInput(
        f"KB {slug!r} changed since training of adapter {adapter_id} began (on snapshot {began_on}; the KB is now "
        f"at snapshot {snapshot_id}), and an adapter is trained on one snapshot: this run is not resumed; train "
        f"again on the current documents with `kadapt train {slug} --mode {mode}`"
    )


def base_model_path(kb: KnowledgeBase, settings: Settings) -> tuple[str, str]:
    """The local folder of the KB's base model (converted on first use) and its Hugging Face id."""
    from kadapt.models import hub_id, local_model_path

    path = local_model_path(kb.base_model, settings)
    if path is None:
        raise InvalidInput(
            f"KB {kb.slug!r} uses model {kb.base_model!r}; adapters are trained on local transformers models"
        )
    return path, hub_id(kb.base_model)


def interrupted_training(catalog: Catalog, kb_id: int, mode: str) -> Job | None:
    """A train job of this KB and mode that stopped mid-way (its process died), to resume."""
    with catalog.session() as session:
        jobs = session.scalars(
            select(Job)
            .where(Job.kb_id == kb_id, Job.kind == "train", Job.state == "interrupted")
            .order_by(Job.created_at.desc())
        )
        return next((job for job in jobs if job.params.get("mode") == mode), None)


def new_adapter_id() -> str:
    return uuid.uuid4().hex[:16]


def train_job_params(
    slug: str, mode: str, config: dict[str, Any], *, activate: bool = False, warm_start: bool = False
) -> dict[str, Any]:
    """A train job's params (the API's and the console's): ``config`` holds the TrainConfig fields given (epochs,
    learning rate, rank, early stop, replay passes); alpha is twice the rank, as everywhere."""
    config = dict(config)
    if "rank" in config:
        config["alpha"] = 2 * config["rank"]
    return {
        "kb": slug,
        "mode": mode,
        "adapter_id": new_adapter_id(),
        "config": config,
        "activate": activate,
        "warm_start": warm_start,
    }


def list_adapters(catalog: Catalog, slug: str) -> list[Adapter]:
    kb = get_kb(catalog, slug)
    with catalog.session() as session:
        return list(session.scalars(select(Adapter).where(Adapter.kb_id == kb.id).order_by(Adapter.created_at.desc())))


def ready_adapter(catalog: Catalog, kb: KnowledgeBase, mode: str, adapter_id: str | None = None) -> Adapter:
    """The KB's ready adapter of fine-tuned ``mode``: ``adapter_id``, or the newest; NotFound when there is none."""
    with catalog.session() as session:
        query = select(Adapter).where(Adapter.kb_id == kb.id, Adapter.mode == mode, Adapter.state == "ready")
        if adapter_id:
            query = query.where(Adapter.id == adapter_id)
        adapter = session.scalar(query.order_by(Adapter.ready_at.desc()).limit(1))
    if adapter is None:
        what = f"adapter {adapter_id!r}" if adapter_id else f"ready {mode} adapter"
        raise NotFound(f"KB {kb.slug!r} has no {what}; train one with `kadapt train {kb.slug} --mode {mode}`")
    return adapter


def active_adapter(catalog: Catalog, kb: KnowledgeBase) -> Adapter | None:
    if kb.active_mode not in ADAPTER_MODES or not kb.active_adapter:
        return None
    with catalog.session() as session:
        return session.get(Adapter, kb.active_adapter)
