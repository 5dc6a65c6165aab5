"""The pilot's measurements turned into cost estimates per mode, and stored per snapshot for reuse."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from sqlalchemy import select

from kadapt.catalog import Catalog, Evaluation
from kadapt.costs import ModeEstimate
from kadapt.modes import ADAPTER_MODES, RAG_MODE
from kadapt.paths import write_atomic
from kadapt.settings import Settings

ADAPTER_PROMPT_TOKENS = 30  # the system prompt serving adds in a fine-tuned mode (chat template included)
ICL_TEMPLATE_TOKENS = 60  # the system prompt serving adds before documents (chat template included)


def _augmentation_seconds(summary: dict[str, Any], seconds: float, spent: dict[str, int], settings: Settings) -> float:
    """Time the sample's augmentation takes: measured when this run generated it, else (it was generated
    before) its stored generated tokens at the generation speed last measured here."""
    rates_path = settings.data_dir / "throughput.json"
    try:
        rates = json.loads(rates_path.read_text()) if rates_path.is_file() else {}
    except (OSError, ValueError):  # a damaged cache is measured again
        rates = {}
    generated_now = sum(counts.get("generated_tokens", 0) for counts in summary["by_augmenter"].values())
    if generated_now and seconds > 0:
        rates["augmentation_tokens_per_second"] = generated_now / seconds
        rates_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(rates_path, json.dumps(rates, indent=2))
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
        same_training = mode not in ADAPTER_MODES or row.stats.get("train") == asdict(train_config)
        if row.stats.get("sample") == sample_digest and same_training:
            return row
    return None


def _store_evaluation(catalog, kb, snapshot, mode, adapter_id, by_kind, detail, sample_digest, train_config) -> None:
    stats = dict(detail) | {"sample": sample_digest}
    if mode in ADAPTER_MODES:
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


def mode_estimates(modes, scores, details, throughput, scale, train_config, settings, workload) -> list[ModeEstimate]:
    """Full-KB cost of each mode from the pilot's measurements (one-off costs scaled by token counts)."""
    usd_per_second = settings.usd_per_hour / 3600
    answer_tokens = workload.answer_tokens
    out = []
    for mode in modes:
        detail = details[mode]
        question_tokens = detail.get("prompt_tokens_mean") or 0
        if mode == RAG_MODE:  # icl's prompt, and aug-ft's one-off cost: it serves the same adapter
            prompt_tokens = question_tokens + ICL_TEMPLATE_TOKENS
            one_off = next(row.one_off_seconds for row in out if row.mode == "aug-ft")
            parts = {"context": detail.get("context"), "adapter": "aug-ft's (trained once for both modes)"}
        elif mode == "icl":
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
                served=(detail.get("served") or {}).get("by_kind"),
            )
        )
    return out
