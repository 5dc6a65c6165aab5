"""The pilot, the policy engine and the adapt loop.

``run_pilot`` measures each mode on a stratified sample of the KB: the base model with no context (the
floor), icl (as serving would build the prompt), and ft / aug-ft (adapters trained on the sample, with the
sample's augmentations for aug-ft), scoring the sample's held-out probes. Costs are measured on this
deployment and scaled to the full KB by token counts. A policy (``register_policies``) turns those
estimates and the KB's workload into a :class:`~kadapt.catalog.Decision`; ``adapt_kb`` runs the whole loop
(sync -> probes -> pilot -> decide -> train the chosen mode on the full KB -> activate).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from kadapt.catalog import Adapter, Catalog, Decision, Document, Evaluation, KnowledgeBase, Snapshot, SnapshotDocument
from kadapt.costs import ModeEstimate, Workload, break_even_table, serving_throughput
from kadapt.errors import InvalidInput, KadaptError, KBTooLarge, NotFound
from kadapt.jobs import JobContext, job_function
from kadapt.kb_limits import MODE_LIMITS, mode_problems
from kadapt.kbs import get_kb, latest_snapshot
from kadapt.settings import Settings, get_settings

__all__ = [
    "PolicyDecision",
    "adapt_kb",
    "decide_kb",
    "get_policy",
    "latest_decision",
    "pilot_sample",
    "report_data",
    "run_pilot",
    "set_workload",
]

PILOT_MODES = ("icl", "ft", "aug-ft")
ADAPTER_PROMPT_TOKENS = 30  # the system prompt serving adds in a fine-tuned mode (chat template included)
ICL_TEMPLATE_TOKENS = 60  # the system prompt serving adds before documents (chat template included)


@dataclass
class PolicyDecision:
    mode: str
    rationale: str


def get_policy(name: str, plugins=None):
    from kadapt.plugins import get_plugins

    policies = (plugins or get_plugins()).contributions("register_policies")
    if name not in policies:
        raise NotFound(f"no policy {name!r}; installed: {', '.join(sorted(policies))}")
    return policies[name]


# -- the pilot sample ------------------------------------------------------------------------------------


@dataclass
class _Doc:
    id: str
    source_id: int
    text: str
    title: str = ""
    locator: str = ""


def _snapshot_documents(catalog: Catalog, snapshot_id: int) -> list[_Doc]:
    with catalog.session() as session:
        members = select(SnapshotDocument.document_id).where(SnapshotDocument.snapshot_id == snapshot_id)
        rows = session.execute(
            select(Document.id, Document.source_id, Document.text, Document.title, Document.locator)
            .where(Document.id.in_(members))
            .order_by(Document.id)
        )
        return [_Doc(*row) for row in rows]


def pilot_sample(documents: list[_Doc], probes, size: int, seed: int = 0) -> tuple[list[str], bool]:
    """Document ids of a stratified sample of about ``size`` documents, and whether it is the whole KB.

    Documents that probes test together (a fact told in several articles, a syllogism's premises) form
    one unit, so a sampled probe always has all its documents; units are drawn from each source in
    proportion to its size. Probes without documents (imported without ``source_ids``) cannot be matched
    to a sample, so they make the pilot use the whole KB."""
    if len(documents) <= size or any(not probe.source_ids for probe in probes):
        return [doc.id for doc in documents], True
    parent = {doc.id: doc.id for doc in documents}

    def find(node: str) -> str:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for probe in probes:
        ids = [doc_id for doc_id in probe.source_ids if doc_id in parent]
        for other in ids[1:]:
            parent[find(other)] = find(ids[0])
    units: dict[str, list[_Doc]] = {}
    for doc in documents:
        units.setdefault(find(doc.id), []).append(doc)
    by_source: dict[int, list[list[_Doc]]] = {}
    for unit in units.values():
        by_source.setdefault(unit[0].source_id, []).append(unit)
    # each source's share of the sample by largest remainder, at least one unit each, then units drawn at
    # random within the source
    rng = random.Random(seed)
    sizes = {source: sum(len(unit) for unit in group) for source, group in by_source.items()}
    exact = {source: size * sizes[source] / len(documents) for source in by_source}
    quota = {source: max(1, int(exact[source])) for source in by_source}
    for source in sorted(by_source, key=lambda key: exact[key] - int(exact[key]), reverse=True):
        if sum(quota.values()) >= size:
            break
        quota[source] += 1
    chosen: list[str] = []
    for source_id in sorted(by_source):
        group = sorted(by_source[source_id], key=lambda unit: unit[0].id)
        rng.shuffle(group)
        taken = 0
        for unit in group:
            if taken >= quota[source_id]:
                break
            chosen.extend(doc.id for doc in unit)
            taken += len(unit)
    return sorted(chosen), False


# -- the pilot --------------------------------------------------------------------------------------------


def _train_config(settings: Settings, overrides: dict[str, Any] | None):
    from kadapt.training import TrainConfig

    # two packed rows per optimizer step: a small KB still gets several steps per epoch, which memorizing
    # facts needs more than large batches
    values = {"epochs": settings.adapt_epochs, "learning_rate": settings.adapt_learning_rate, "rows_per_step": 2}
    return TrainConfig(**(values | (overrides or {})))


def _tokens(model, texts: list[str]) -> int:
    from kadapt.evaluate import token_count

    return sum(token_count(model, text) for text in texts)


def _pilot_adapter(
    catalog: Catalog,
    kb: KnowledgeBase,
    snapshot: Snapshot,
    mode: str,
    sample_ids: list[str],
    whole: bool,
    train_config,
    settings: Settings,
    context: JobContext | None,
) -> tuple[str, str, dict[str, Any]]:
    """Train (or reuse) the mode's adapter on the sample; (adapter id, path, training stats).

    A whole-KB pilot trains the KB's real adapter (an Adapter row the KB can then serve); a sample's
    adapter lives under the data dir's pilots folder."""
    from kadapt.adapters import base_model_path, training_texts
    from kadapt.training import train_lora

    config = asdict(train_config)
    if whole:
        return _kb_adapter(catalog, kb, snapshot, mode, config, context)
    data = training_texts(catalog, kb, snapshot.id, mode, document_ids=sample_ids)
    digest = hashlib.sha256(repr((sorted(sample_ids), config, mode, len(data["texts"]))).encode()).hexdigest()[:12]
    folder = settings.data_dir / "pilots" / kb.slug / f"{snapshot.id}-{mode}-{digest}"
    if not (folder / "adapter_config.json").is_file():
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
        )
        (folder / "kadapt-stats.json").write_text(
            json.dumps(asdict(result) | {"documents": data["documents"]}, indent=2, default=str)
        )
    stats = json.loads((folder / "kadapt-stats.json").read_text())
    return f"pilot-{kb.slug}-{folder.name}", str(folder), stats


def _kb_adapter(catalog: Catalog, kb, snapshot, mode: str, config: dict[str, Any], context) -> tuple[str, str, dict]:
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


def run_pilot(
    catalog: Catalog,
    slug: str,
    *,
    modes: tuple[str, ...] = PILOT_MODES,
    sample_size: int | None = None,
    train: dict[str, Any] | None = None,
    augmenters: list[str] | None = None,
    context: JobContext | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Measure accuracy (per probe kind, with 95% intervals) and cost of each mode on a sample of the KB,
    store them as Evaluations of the snapshot and return the estimates (the report's data, no decision)."""
    from kadapt.augment import augment_kb
    from kadapt.evaluate import icl_contexts, score_mode
    from kadapt.models import get_model_pool
    from kadapt.probes import generate_probes, leaked, snapshot_probes
    from kadapt.store import get_store

    settings = settings or get_settings()
    unknown = [mode for mode in modes if mode not in PILOT_MODES]
    if unknown:
        raise InvalidInput(f"unknown mode(s) {', '.join(unknown)}; use {', '.join(PILOT_MODES)}")
    kb = get_kb(catalog, slug)
    snapshot = latest_snapshot(catalog, kb.id)
    if snapshot is None:
        raise InvalidInput(f"KB {slug!r} has no documents; run `kadapt sync {slug}` or `kadapt kb import` first")
    # a mode the KB is too large for cannot be chosen, so it is not measured either
    too_large = mode_problems(catalog, kb, modes, settings)
    modes = tuple(mode for mode in modes if mode not in too_large)
    probes = snapshot_probes(catalog, snapshot.id)
    if not probes:
        generate_probes(catalog, slug, context=None, settings=settings)
        probes = snapshot_probes(catalog, snapshot.id)
    if not probes:
        raise InvalidInput(
            f"KB {slug!r} has no probes for its current snapshot; import some with `kadapt probes import {slug} FILE`"
        )
    if any(probe.generator == "import" for probe in probes):  # an external benchmark is measured on its own
        probes = [probe for probe in probes if probe.generator == "import"]
    documents = _snapshot_documents(catalog, snapshot.id)
    warnings: list[str] = [f"{mode} not measured: {reason}." for mode, reason in too_large.items()]
    excluded = leaked(probes, [doc.text for doc in documents])
    if excluded:
        warnings.append(
            f"{len(excluded)} probe(s) left out: their question and answer appear verbatim in the documents, "
            "so they test recall, not generalization."
        )
        probes = [probe for probe in probes if probe.id not in excluded]
    size = sample_size or settings.pilot_documents
    sample_ids, whole = pilot_sample(documents, probes, size)
    sample = set(sample_ids)
    pilot_probes = probes if whole else [probe for probe in probes if set(probe.source_ids) <= sample]
    if not pilot_probes:
        raise InvalidInput(f"the pilot sample of {len(sample)} documents has no probes; raise KADAPT_PILOT_DOCUMENTS")
    if whole and len(documents) > size:
        warnings.append(
            f"Some probes name no documents, so the pilot ran on the whole KB ({len(documents)} documents) "
            f"instead of a sample of {size}."
        )
    model = get_model_pool().get(kb.base_model)
    if not hasattr(model, "score_choices"):
        raise InvalidInput(f"model {kb.base_model!r} cannot score probes; the pilot needs a local transformers model")
    train_config = _train_config(settings, train)
    names = list(augmenters or settings.adapt_augmenters)
    # what a stored measurement depends on: the sample, the probes, the model and how icl prompts are built
    sample_digest = hashlib.sha256(
        json.dumps(
            [
                sample_ids,
                sorted(probe.id for probe in pilot_probes),
                kb.base_model,
                settings.icl_context_tokens,
                settings.retrieval_k,
                names,
            ]
        ).encode()
    ).hexdigest()[:16]
    texts = {doc.id: doc.text for doc in documents}
    kb_tokens = _tokens(model, list(texts.values()))
    sample_tokens = _tokens(model, [texts[doc_id] for doc_id in sample_ids]) or 1
    scale = kb_tokens / sample_tokens
    steps = ["floor", *modes]
    stage_seconds: dict[str, float] = {}
    scores: dict[str, Any] = {}
    details: dict[str, dict[str, Any]] = {}

    def note(done: int, message: str) -> None:
        if context:
            context.progress(done=done, total=len(steps), message=message)
            context.log(message)

    note(0, f"pilot on {len(sample_ids)} of {len(documents)} documents, {len(pilot_probes)} probes")
    for index, mode in enumerate(steps):
        started = time.perf_counter()
        stored = _stored_evaluation(catalog, snapshot.id, mode, sample_digest, train_config)
        if stored is not None:
            scores[mode], details[mode] = stored.by_kind, stored.stats
            note(index + 1, f"{mode}: measured before, reused")
            continue
        adapter_id = adapter_path = None
        detail: dict[str, Any] = {}
        contexts = None
        if mode == "icl":
            contexts, how, in_context = icl_contexts(
                pilot_probes,
                sorted(documents, key=lambda doc: doc.locator),
                model=model,
                store=get_store(settings),
                kb_slug=kb.slug,
                budget_tokens=settings.icl_context_tokens,
                k=settings.retrieval_k,
            )
            detail["context"], detail["documents_in_context"] = how, in_context
        elif mode in ("ft", "aug-ft"):
            if mode == "aug-ft":
                augment_started = time.perf_counter()
                summary = augment_kb(catalog, slug, names=names, document_ids=sample_ids, settings=settings)
                seconds = time.perf_counter() - augment_started
                spent = _augmentation_tokens(catalog, kb.id, sample, names)
                detail["augmentation"] = summary["by_augmenter"]
                detail["augmentation_tokens"] = spent
                detail["augmentation_seconds"] = _augmentation_seconds(summary, seconds, spent, settings)
            adapter_id, adapter_path, train_stats = _pilot_adapter(
                catalog, kb, snapshot, mode, sample_ids, whole, train_config, settings, context
            )
            detail["adapter"] = adapter_id
            detail["training"] = {
                key: train_stats.get(key)
                for key in (
                    "examples",
                    "tokens",
                    "steps",
                    "seconds",
                    "tokens_per_second",
                    "final_loss",
                    "augmentations",
                )
            }
        result = score_mode(
            model, mode, pilot_probes, contexts=contexts, adapter_id=adapter_id, adapter_path=adapter_path
        )
        detail |= result.stats
        scores[mode], details[mode] = result.by_kind, detail
        _store_evaluation(catalog, kb, snapshot, mode, adapter_id, result.by_kind, detail, sample_digest, train_config)
        stage_seconds[mode] = round(time.perf_counter() - started, 1)
        note(index + 1, f"{mode}: " + ", ".join(f"{k} {v['accuracy']:.2f}" for k, v in result.by_kind.items()))
    throughput = serving_throughput(model, settings.data_dir)
    estimates = _estimates(
        modes, scores, details, throughput, scale, train_config, settings, Workload.from_dict(kb.workload)
    )
    return {
        "kb": {"slug": kb.slug, "title": kb.title},
        "snapshot": {"id": snapshot.id, "hash": snapshot.hash, "documents": len(documents)},
        "pilot": {
            "documents": len(sample_ids),
            "kb_documents": len(documents),
            "probes": len(pilot_probes),
            "scale": round(scale, 3),
            "whole_kb": whole,
            "kb_tokens": kb_tokens,
            "sample_tokens": sample_tokens,
            "train": asdict(train_config),
        },
        "modes": steps,
        "excluded": too_large,
        "accuracy": [
            {"mode": mode, "kind": kind} | row for mode in steps for kind, row in sorted(scores[mode].items())
        ],
        "estimates": [asdict(estimate) for estimate in estimates],
        "throughput": asdict(throughput),
        "usd_per_hour": settings.usd_per_hour,
        "details": details,
        "stage_seconds": stage_seconds,
        "warnings": warnings + _shortcut_warnings(scores),
    }


def _augmentation_seconds(summary: dict[str, Any], seconds: float, spent: dict[str, int], settings: Settings) -> float:
    """Time the sample's augmentation takes: measured when this run generated it, else (it was generated
    before) its stored generated tokens at the generation speed last measured here."""
    rates_path = settings.data_dir / "throughput.json"
    rates = json.loads(rates_path.read_text()) if rates_path.is_file() else {}
    generated_now = sum(counts.get("generated_tokens", 0) for counts in summary["by_augmenter"].values())
    if generated_now and seconds > 0:
        rates["augmentation_tokens_per_second"] = generated_now / seconds
        rates_path.parent.mkdir(parents=True, exist_ok=True)
        rates_path.write_text(json.dumps(rates, indent=2))
        if generated_now >= spent.get("generated_tokens", 0):
            return seconds
    rate = rates.get("augmentation_tokens_per_second")
    if not rate or not spent.get("generated_tokens"):
        return seconds
    return spent["generated_tokens"] / rate


def _augmentation_tokens(catalog: Catalog, kb_id: int, sample: set[str], names: list[str]) -> dict[str, int]:
    from kadapt.catalog import AugmentationUnit

    with catalog.session() as session:
        units = session.scalars(
            select(AugmentationUnit).where(AugmentationUnit.kb_id == kb_id, AugmentationUnit.augmenter.in_(names))
        ).all()
    units = [unit for unit in units if unit.document_id in sample]
    return {
        "prompt_tokens": sum(unit.prompt_tokens for unit in units),
        "generated_tokens": sum(unit.generated_tokens for unit in units),
    }


def _shortcut_warnings(scores: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    for mode, by_kind in scores.items():
        if mode == "floor":  # the floor is the reference; it is expected to sit near chance
            continue
        level = [kind for kind, row in by_kind.items() if row.get("shortcut_level")]
        if level:
            out.append(
                f"{mode}: {', '.join(level)} at shortcut level (the lower 95% bound does not beat chance "
                "or always picking the first, last, shortest or longest choice)."
            )
    return out


def _stored_evaluation(catalog: Catalog, snapshot_id: int, mode: str, sample_digest: str, train_config):
    with catalog.session() as session:
        rows = session.scalars(
            select(Evaluation)
            .where(Evaluation.snapshot_id == snapshot_id, Evaluation.mode == mode, Evaluation.scope == "pilot")
            .order_by(Evaluation.id.desc())
        ).all()
    for row in rows:
        same_training = mode not in ("ft", "aug-ft") or row.stats.get("train") == asdict(train_config)
        if row.stats.get("sample") == sample_digest and same_training:
            return row
    return None


def _store_evaluation(catalog, kb, snapshot, mode, adapter_id, by_kind, detail, sample_digest, train_config) -> None:
    stats = dict(detail) | {"sample": sample_digest}
    if mode in ("ft", "aug-ft"):
        stats["train"] = asdict(train_config)
    with catalog.session() as session:
        session.add(
            Evaluation(
                kb_id=kb.id,
                snapshot_id=snapshot.id,
                mode=mode,
                scope="pilot",
                adapter_id=adapter_id if adapter_id and not adapter_id.startswith("pilot-") else None,
                by_kind=by_kind,
                stats=stats,
            )
        )


def _estimates(modes, scores, details, throughput, scale, train_config, settings, workload) -> list[ModeEstimate]:
    """Full-KB cost of each mode from the pilot's measurements (one-off costs scaled by token counts)."""
    usd_per_second = settings.usd_per_hour / 3600
    answer_tokens = workload.answer_tokens
    out = []
    for mode in modes:
        detail = details[mode]
        question_tokens = detail.get("prompt_tokens_mean") or 0
        if mode == "icl":
            prompt_tokens = question_tokens + ICL_TEMPLATE_TOKENS  # the scored prompts hold the fenced documents
            one_off = 0.0
            parts = {"context": detail.get("context")}
        else:
            floor_tokens = details["floor"].get("prompt_tokens_mean") or 0
            prompt_tokens = floor_tokens + ADAPTER_PROMPT_TOKENS
            training = detail.get("training") or {}
            tokens_per_second = training.get("tokens_per_second") or 1.0
            train_seconds = (training.get("tokens") or 0) * train_config.epochs / tokens_per_second * scale
            augment_seconds = detail.get("augmentation_seconds", 0.0) * scale
            one_off = train_seconds + augment_seconds
            parts = {
                "training_seconds": round(train_seconds, 1),
                "augmentation_seconds": round(augment_seconds, 1),
                "training_tokens": round((training.get("tokens") or 0) * train_config.epochs * scale),
                "augmentation_generated_tokens": round(
                    (detail.get("augmentation_tokens") or {}).get("generated_tokens", 0) * scale
                ),
            }
        per_query = throughput.query_seconds(prompt_tokens, answer_tokens)
        out.append(
            ModeEstimate(
                mode=mode,
                accuracy=scores[mode],
                one_off_usd=one_off * usd_per_second,
                per_query_usd=per_query * usd_per_second,
                one_off_seconds=round(one_off, 2),
                per_query_seconds=round(per_query, 4),
                prompt_tokens_per_query=round(prompt_tokens, 1),
                details=parts,
            )
        )
    return out


# -- decisions --------------------------------------------------------------------------------------------


def _workload(kb: KnowledgeBase) -> Workload:
    return Workload.from_dict(kb.workload)


def set_workload(catalog: Catalog, slug: str, changes: dict[str, Any], policy: str | None = None) -> KnowledgeBase:
    """Update the KB's workload (and policy); re-decides from the last pilot's estimates when there are any."""
    from kadapt.probes import KINDS

    kb = get_kb(catalog, slug)
    workload = Workload.from_dict((kb.workload or {}) | {k: v for k, v in changes.items() if v is not None})
    unknown = [kind for kind in workload.kinds or [] if kind not in KINDS]
    if unknown:
        raise InvalidInput(f"unknown probe kind(s) {', '.join(unknown)}; use {', '.join(KINDS)}")
    check_policy(policy or kb.policy, workload)
    _check_fixed_mode(catalog, slug, policy, workload=workload)
    with catalog.session() as session:
        row = session.get(KnowledgeBase, kb.id)
        row.workload = workload.to_dict()
        if policy is not None:
            row.policy = policy
    if latest_decision(catalog, slug) is not None:
        decide_kb(catalog, slug, reason="the workload or policy changed")
    return get_kb(catalog, slug)


def check_policy(name: str, workload: Workload) -> None:
    """Raise a clear error now, before anything is saved or measured, when the policy cannot decide."""
    get_policy(name)
    if name == "fixed" and workload.mode not in ("icl", "ft", "aug-ft"):
        raise InvalidInput(
            "the fixed policy needs the workload's mode: `kadapt kb set-workload KB --mode icl|ft|aug-ft`"
        )


def latest_decision(catalog: Catalog, slug: str) -> Decision | None:
    kb = get_kb(catalog, slug)
    with catalog.session() as session:
        return session.scalar(select(Decision).where(Decision.kb_id == kb.id).order_by(Decision.id.desc()).limit(1))


def _price_queries(modes: list[ModeEstimate], estimates: dict[str, Any], workload: Workload) -> None:
    """Per-query cost from each mode's prompt tokens and the workload's answer length, at the serving
    throughput and price recorded with the measurement."""
    from kadapt.costs import Throughput

    if "throughput" not in estimates:
        return
    throughput = Throughput(**estimates["throughput"])
    usd_per_second = estimates.get("usd_per_hour", get_settings().usd_per_hour) / 3600
    for estimate in modes:
        seconds = throughput.query_seconds(estimate.prompt_tokens_per_query, workload.answer_tokens)
        estimate.per_query_seconds = round(seconds, 4)
        estimate.per_query_usd = seconds * usd_per_second


def decide_kb(
    catalog: Catalog,
    slug: str,
    *,
    estimates: dict[str, Any] | None = None,
    policy: str | None = None,
    reason: str = "",
    context: JobContext | None = None,
) -> Decision:
    """Apply the KB's policy to ``estimates`` (default: the last decision's, i.e. the last pilot) and its
    current workload; store and return the Decision. Per-query costs follow the workload's answer length;
    estimates measured on an older snapshot are used as they are, and the rationale says so."""
    kb = get_kb(catalog, slug)
    if estimates is None:
        previous = latest_decision(catalog, slug)
        if previous is None:
            raise InvalidInput(
                f"KB {slug!r} has no measurements yet; run `kadapt decide {slug}` or `kadapt adapt {slug}`"
            )
        estimates = dict(previous.estimates)
    snapshot = latest_snapshot(catalog, kb.id)
    workload = _workload(kb)
    policy_name = policy or kb.policy
    chosen_policy = get_policy(policy_name)
    modes = [ModeEstimate.from_dict(row) for row in estimates["estimates"]]
    _price_queries(modes, estimates, workload)
    notes = []
    measured_on = estimates.get("snapshot", {}).get("id")
    if snapshot is not None and measured_on is not None and measured_on != snapshot.id:
        notes.append(
            f"Estimates were measured on snapshot {measured_on}; the KB is now at snapshot {snapshot.id}. "
            f"Run `kadapt adapt {slug}` to measure again."
        )
    # modes the KB is too large for (measured before it grew, or left out of the pilot) are not offered
    refused = mode_problems(catalog, kb, {row.mode for row in modes} | set(estimates.get("excluded") or {}))
    eligible = [row for row in modes if row.mode not in refused]
    if refused and not eligible:
        raise KBTooLarge("; ".join(refused.values()))
    decision = chosen_policy.decide(eligible, workload)
    if decision.mode in refused:  # a policy that ignores the estimates, such as fixed
        raise KBTooLarge(f"the {policy_name} policy chose {decision.mode}, but {refused[decision.mode]}")
    table = break_even_table(eligible)
    rationale = decision.rationale
    rationale += "".join(f"\n- {mode}: not eligible: {reason}." for mode, reason in sorted(refused.items()))
    if reason:
        rationale = f"Re-decided because {reason}.\n" + rationale
    if table:
        rationale += "\n" + "\n".join(
            f"Break-even {row['from']} -> {row['to']}: "
            + ("never (it costs more per query)" if row["queries"] is None else f"{row['queries']:,.0f} queries")
            for row in table
        )
    rationale += "".join("\n" + note for note in notes)
    estimates = dict(estimates) | {
        "break_even": table,
        "workload": workload.to_dict(),
        "estimates": [asdict(estimate) for estimate in modes],
    }
    with catalog.session() as session:
        row = Decision(
            kb_id=kb.id,
            snapshot_id=snapshot.id if snapshot else None,
            policy=policy_name,
            mode=decision.mode,
            workload=workload.to_dict(),
            estimates=estimates,
            break_even={f"{r['from']}->{r['to']}": r["queries"] for r in table},
            rationale=rationale,
            job_id=context.job_id if context else None,
        )
        session.add(row)
    if context:
        context.log(f"decision: {decision.mode} ({policy_name})")
    return row


def redecide_after_change(catalog: Catalog, slug: str, snapshot: Snapshot, context: JobContext | None = None) -> None:
    """A KB that was decided before gets a new decision when a sync records a new snapshot: the policy
    weighs the last measurement against the current workload, and the rationale says the estimates come
    from an older snapshot (``kadapt adapt`` measures again)."""
    if latest_decision(catalog, slug) is None:
        return
    try:
        decision = decide_kb(catalog, slug, reason=f"a sync recorded snapshot {snapshot.id}", context=context)
    except KadaptError as exc:  # the sync itself succeeded; a policy that cannot decide is reported, not fatal
        if context:
            context.log(f"could not re-decide: {exc.message}")
        return
    if context:
        context.log(f"re-decided: {decision.mode} (run `kadapt adapt {slug}` to measure the new snapshot)")


def decision_dict(decision: Decision) -> dict[str, Any]:
    chosen = next((row for row in decision.break_even.items() if row[0].endswith("->" + decision.mode)), None)
    return {
        "id": decision.id,
        "policy": decision.policy,
        "mode": decision.mode,
        "snapshot_id": decision.snapshot_id,
        "workload": decision.workload,
        "break_even": decision.break_even,
        "break_even_queries": chosen[1] if chosen else None,
        "rationale": decision.rationale,
        "created_at": decision.created_at.isoformat() if decision.created_at else None,
    }


def report_data(catalog: Catalog, slug: str) -> dict[str, Any]:
    """The report's data for the KB: its latest decision with the estimates behind it."""
    from kadapt.catalog import utcnow

    kb = get_kb(catalog, slug)
    decision = latest_decision(catalog, slug)
    if decision is None:
        raise NotFound(f"KB {slug!r} has no decision yet; run `kadapt decide {slug}` or `kadapt adapt {slug}`")
    data = dict(decision.estimates)
    estimates = data.pop("estimates", [])
    data["costs"] = [
        {
            key: row[key]
            for key in (
                "mode",
                "one_off_usd",
                "per_query_usd",
                "one_off_seconds",
                "per_query_seconds",
                "prompt_tokens_per_query",
                "details",
            )
        }
        for row in estimates
    ]
    data["kb"] = {"slug": kb.slug, "title": kb.title}
    data["workload"] = decision.workload | {"usd_per_hour": data.get("usd_per_hour", get_settings().usd_per_hour)}
    data["decision"] = decision_dict(decision)
    data["generated_at"] = utcnow().isoformat()
    return data


def write_kb_report(catalog: Catalog, slug: str, settings: Settings | None = None) -> tuple[Path, Path]:
    from kadapt.report import write_report

    settings = settings or get_settings()
    return write_report(report_data(catalog, slug), settings.data_dir / "reports" / slug)


# -- the whole loop ---------------------------------------------------------------------------------------


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
    from kadapt.adapters import set_mode
    from kadapt.ingest import sync_kb
    from kadapt.kbs import list_sources
    from kadapt.probes import generate_probes

    settings = settings or get_settings()
    kb = get_kb(catalog, slug)
    check_policy(policy or kb.policy, Workload.from_dict(kb.workload))
    _check_fixed_mode(catalog, slug, policy, settings)
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
    if decision.mode in ("ft", "aug-ft"):
        adapter_id = stage("train", _full_adapter, catalog, kb, decision.mode, estimates, train, context, settings)
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
        "rationale": decision.rationale,
    }


def _full_adapter(catalog, kb, mode, estimates, train, context, settings) -> str:
    """The chosen mode's adapter on the full KB: the pilot's when it ran on the whole KB; else the one
    already trained for this snapshot and config, resumed if interrupted, or a new one."""
    from kadapt.augment import augment_kb

    detail = estimates["details"].get(mode, {})
    if estimates["pilot"]["whole_kb"] and detail.get("adapter"):
        return detail["adapter"]
    if mode == "aug-ft":
        augment_kb(catalog, kb.slug, names=settings.adapt_augmenters, settings=settings)
    snapshot = latest_snapshot(catalog, kb.id)
    config = asdict(_train_config(settings, train))
    return _kb_adapter(catalog, kb, snapshot, mode, config, context)[0]


def _check_fixed_mode(
    catalog: Catalog,
    kb: str,
    policy: str | None = None,
    settings: Settings | None = None,
    workload: Workload | None = None,
    **_: Any,
) -> None:
    """A KB pinned by the fixed policy to a mode it is too large for cannot be adapted: say so up front."""
    row = get_kb(catalog, kb)
    mode = (workload or Workload.from_dict(row.workload)).mode
    if (policy or row.policy) == "fixed" and mode in MODE_LIMITS:
        problem = mode_problems(catalog, row, [mode], settings).get(mode)
        if problem:
            raise KBTooLarge(f"the fixed policy pins KB {kb!r} to {mode}, but {problem}")


@job_function("evaluate", check=_check_fixed_mode)
def _evaluate_job(context: JobContext, kb: str, sample_size: int | None = None, train: dict | None = None) -> dict:
    estimates = run_pilot(context.catalog, kb, sample_size=sample_size, train=train, context=context)
    decision = decide_kb(context.catalog, kb, estimates=estimates, context=context)
    return {"decision": decision_dict(decision), "pilot": estimates["pilot"], "warnings": estimates["warnings"]}


@job_function("adapt", check=_check_fixed_mode)
def _adapt_job(
    context: JobContext, kb: str, sample_size: int | None = None, train: dict | None = None, policy: str | None = None
) -> dict:
    return adapt_kb(context.catalog, kb, sample_size=sample_size, train=train, policy=policy, context=context)
