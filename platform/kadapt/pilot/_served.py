"""What the pilot asks each mode in chat: served accuracy through the serving path, and forgetting (general
questions with and without an adapter)."""

from __future__ import annotations

from typing import Any

from kadapt.catalog import Catalog, KnowledgeBase
from kadapt.errors import InvalidInput
from kadapt.modes import RAG_MODE
from kadapt.settings import Settings

# -- forgetting ---------------------------------------------------------------------------------------------


def _forgetting(catalog: Catalog, kb: KnowledgeBase, adapter, settings: Settings) -> dict[str, Any]:
    """What the mode's adapter costs the base model's general answers (:mod:`kadapt.forgetting`), with the
    questions it got wrong that the base model got right."""
    from kadapt.forgetting import adapter_forgetting
    from kadapt.store import get_store

    result = adapter_forgetting(catalog, get_store(settings), kb, adapter, settings=settings)
    lost = [item for item in result.answers if item["base_correct"] and not item["adapter_correct"]]
    return {
        "questions": result.questions,
        "base_accuracy": result.base_accuracy,
        "adapter_accuracy": result.adapter_accuracy,
        "relative_drop": result.relative_drop,
        "lost": [{"question": item["question"], "answer": item["adapter_answer"]} for item in lost[:3]],
        "routed_to_base": result.routed_to_base,
        "adapter_alone_accuracy": result.adapter_alone_accuracy,
        "adapter_alone_drop": result.adapter_alone_drop,
    }


def forgetting_warnings(details: dict[str, dict[str, Any]], steps: list[str], settings: Settings) -> list[str]:
    """A warning per adapter whose general answers drop more than the tolerance, as production will serve them:
    routed in this process, every question through the adapter on a LoRA server (it does not route)."""
    from kadapt.forgetting import FORGETTING_TOLERANCE

    alone = bool(settings.lora_server_url)
    warnings = []
    for mode in steps:
        found = details[mode].get("forgetting")
        if not found:
            continue
        accuracy, drop = found["adapter_accuracy"], found["relative_drop"]
        if alone and found.get("adapter_alone_drop") is not None:
            accuracy, drop = found["adapter_alone_accuracy"], found["adapter_alone_drop"]
        if drop > FORGETTING_TOLERANCE:
            warnings.append(
                f"Through {mode}'s adapter{' (on the LoRA server, which does not route)' if alone else ''} the model "
                f"answers {accuracy:.0%} of {found['questions']} general questions right, the base model "
                f"{found['base_accuracy']:.0%} (a relative drop of {drop:.0%}, over {FORGETTING_TOLERANCE:.0%}): "
                "employees asking it anything beyond the KB get worse answers."
            )
    return warnings


# -- served accuracy ----------------------------------------------------------------------------------------


def _answerer(catalog: Catalog, kb: KnowledgeBase, mode: str, adapter_id, adapter_path, whole: bool):
    """Who answers the mode's chat questions: the floor no context; icl, and a whole-KB pilot's adapter modes, as
    ``kadapt probes answer`` would; a sample's adapter modes their folder."""
    from kadapt.modes import trained_mode
    from kadapt.served import AdapterFolder, mode_answerer
    from kadapt.serving import NO_CONTEXT, WithDocuments

    if mode == "floor":
        return NO_CONTEXT
    if whole or mode == "icl":
        return mode_answerer(catalog, kb, mode, adapter_id)
    adapter = AdapterFolder(adapter_id, adapter_path, trained_mode(mode))
    return WithDocuments(adapter) if mode == RAG_MODE else adapter


def _adapter_path(catalog: Catalog, kb: KnowledgeBase, adapter_id: str, whole: bool) -> str:
    """The folder of aug-ft's adapter when its measurement was stored without it (before aug-ft+rag existed)."""
    from kadapt.adapters import ready_adapter

    if not whole:
        raise InvalidInput(
            f"aug-ft was measured before {RAG_MODE} existed and its sample adapter's folder is not recorded; "
            "run the pilot again with another sample size, or on the whole KB"
        )
    return ready_adapter(catalog, kb, "aug-ft", adapter_id).path


def _serve_mode(
    catalog, kb, snapshot_id: int, probes, answerer, pilot_probes: int, settings, icl_contrast: float | None = None
) -> dict[str, Any]:
    """Served accuracy of one mode on the pilot's chat-form probes: per kind, the run id of its stored answers,
    and a sample of questions, answers and verdicts. ``icl_contrast``: icl's decoding weight (default the KB's)."""
    from kadapt.served import answer_samples, serve_probes
    from kadapt.store import get_store

    store, mc_only = get_store(settings), pilot_probes - len(probes)
    evaluation = serve_probes(
        catalog,
        store,
        kb,
        probes,
        answerer,
        snapshot_id=snapshot_id,
        mc_only=mc_only,
        settings=settings,
        icl_contrast=icl_contrast,
    )
    return {
        "by_kind": evaluation.by_kind,
        "run_id": evaluation.run_id,
        "judge": evaluation.judge,
        "probes": len(evaluation.answers),
        "served_as": sorted({item.served_as for item in evaluation.answers}),
        "samples": answer_samples(evaluation.answers),
    }


def _served_report(details, scores, steps, chat_form, pilot_probes, settings) -> dict[str, Any] | None:
    """Served accuracy beside MC for the report and the policy; None when every pilot probe is MC-only."""
    from kadapt.served import overstatement

    served = {mode: details[mode]["served"] for mode in steps if details[mode].get("served")}
    if not served:
        return None
    return {
        "judge": next(iter(served.values()))["judge"],
        "policy_measure": settings.policy_measure,
        "chat_probes": len(chat_form),
        "mc_only_probes": len(pilot_probes) - len(chat_form),
        "accuracy": [
            {"mode": mode, "kind": kind} | row
            for mode in served
            for kind, row in sorted(served[mode]["by_kind"].items())
        ],
        "overstatement": overstatement(
            {mode: row.get("mc_by_kind", scores[mode]) for mode, row in served.items()},
            {mode: row["by_kind"] for mode, row in served.items()},
        ),
        "samples": {mode: row["samples"] for mode, row in served.items()},
        "run_ids": {mode: row["run_id"] for mode, row in served.items()},
    }


def _mc_only_warnings(chat_form, pilot_probes) -> list[str]:
    if len(chat_form) == len(pilot_probes):
        return []
    if not chat_form:
        return [
            "Every probe is MC-only (no chat question and accepted answers): served accuracy is absent, so the "
            "policy decides on multiple-choice likelihood, which overstates what chat users get."
        ]
    return [
        f"{len(pilot_probes) - len(chat_form)} of {len(pilot_probes)} probes are MC-only (no chat question and "
        "accepted answers): served accuracy covers the others only."
    ]
