"""The pilot: what each way of teaching a KB scores and costs, measured on a sample of it.

``run_pilot`` measures each mode on a stratified sample of the KB: the base model with no context (the
floor), icl (as serving would build the prompt), and ft / aug-ft (adapters trained on the sample, with the
sample's augmentations for aug-ft), scoring the sample's held-out probes by multiple-choice likelihood and,
for the probes with a chat form, by served accuracy: the chat question asked through the serving path
(:func:`kadapt.served.serve_probes`), the answer judged. Costs are measured on this deployment and scaled to
the full KB by token counts. :mod:`kadapt.policy` turns the estimates into a decision.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from kadapt.catalog import Catalog, KnowledgeBase, Snapshot
from kadapt.costs import Workload, serving_throughput
from kadapt.errors import InvalidInput
from kadapt.jobs import JobContext
from kadapt.kb_limits import mode_problems
from kadapt.kbs import get_kb, latest_snapshot
from kadapt.models.tokens import tokens_of
from kadapt.modes import FINE_TUNED_MODES, MODES, RAG_MODE
from kadapt.pilot._adapters import (
    _TRAINING_KEYS,
    _recipe_score,
    kb_adapter,
    mean_accuracy,
    pilot_adapter,
    recipe_config,
    recipe_list,
    training_config,
)
from kadapt.pilot._estimates import (
    _augmentation_seconds,
    _augmentation_tokens,
    _shortcut_warnings,
    _store_evaluation,
    _stored_evaluation,
    mode_estimates,
)
from kadapt.pilot._sampling import SampleDoc, _sample, pilot_sample, snapshot_docs
from kadapt.pilot._served import (
    _adapter_path,
    _answerer,
    _forgetting,
    _mc_only_warnings,
    _serve_mode,
    _served_report,
    forgetting_warnings,
)
from kadapt.settings import Settings, get_settings

__all__ = [
    "PILOT_MODES",
    "SampleDoc",
    "forgetting_warnings",
    "kb_adapter",
    "mean_accuracy",
    "mode_estimates",
    "pilot_adapter",
    "pilot_sample",
    "recipe_config",
    "recipe_list",
    "run_pilot",
    "snapshot_docs",
    "training_config",
]

PILOT_MODES = MODES  # in this order: aug-ft+rag answers with aug-ft's adapter


def _pilot_modes(modes: tuple[str, ...]) -> tuple[str, ...]:
    """``modes`` checked and in the pilot's order (aug-ft+rag after the aug-ft it answers with)."""
    unknown = [mode for mode in modes if mode not in PILOT_MODES]
    if unknown:
        raise InvalidInput(f"unknown mode(s) {', '.join(unknown)}; use {', '.join(PILOT_MODES)}")
    if RAG_MODE in modes and "aug-ft" not in modes:
        raise InvalidInput(f"{RAG_MODE} answers with aug-ft's adapter: measure aug-ft with it")
    return tuple(mode for mode in PILOT_MODES if mode in modes)


def _kb_probes(catalog, slug, snapshot, documents, settings, warnings: list[str]) -> list:
    """The snapshot's probes (generated when it has none; an imported benchmark's alone when it has one), less
    those whose question and answer the documents state verbatim (they test recall)."""
    from kadapt.probes import generate_probes, leaked, snapshot_probes

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
    excluded = leaked(probes, [doc.text for doc in documents])
    if excluded:
        warnings.append(
            f"{len(excluded)} probe(s) left out: their question and answer appear verbatim in the documents, "
            "so they test recall, not generalization."
        )
    return [probe for probe in probes if probe.id not in excluded]


@dataclass
class _PilotRun:
    """One pilot: what every mode's measurement shares, and the details measured so far."""

    catalog: Catalog
    kb: KnowledgeBase
    snapshot: Snapshot
    settings: Settings
    context: JobContext | None
    documents: list[SampleDoc]
    sample_ids: list[str]
    whole: bool
    probes: list  # the sample's probes
    model: Any
    train_config: Any
    details: dict[str, dict[str, Any]]

    @property
    def chat_form(self) -> list:
        return [probe for probe in self.probes if probe.chat_question and probe.answers]

    def note(self, done: int, total: int, message: str) -> None:
        if self.context:
            self.context.progress(done=done, total=total, message=message)
            self.context.log(message)

    def measure(self, mode: str, names: list[str], recipe: list[str] | None):
        """One mode measured: (MC result, detail, adapter id, adapter path); ``names`` are the augmenters aug-ft
        runs, ``recipe`` limits its training data to their augmentations (when recipes are compared)."""
        from kadapt.evaluate import icl_contexts, score_mode
        from kadapt.store import get_store

        adapter_id = adapter_path = None
        detail: dict[str, Any] = {"seconds_by_part": {}}
        contexts = None
        if mode in ("icl", RAG_MODE):
            documents = sorted(self.documents, key=lambda doc: doc.locator)
            contexts, how, in_context = icl_contexts(
                self.probes, documents, model=self.model, store=get_store(self.settings), kb=self.kb,
                settings=self.settings,
            )  # fmt: skip
            detail["context"], detail["documents_in_context"] = how, in_context
        if mode == RAG_MODE:  # aug-ft's adapter, asked with icl's documents: nothing more to train
            trained = self.details["aug-ft"]
            adapter_id = trained["adapter"]
            adapter_path = trained.get("adapter_path") or _adapter_path(self.catalog, self.kb, adapter_id, self.whole)
            detail |= {key: trained[key] for key in ("adapter", "training") if key in trained}
            detail["adapter_path"] = adapter_path
        elif mode in FINE_TUNED_MODES:
            adapter_id, adapter_path = self._train(mode, names, recipe, detail)
        started = time.perf_counter()
        result = score_mode(
            self.model, mode, self.probes, contexts=contexts, adapter_id=adapter_id, adapter_path=adapter_path
        )
        detail |= result.stats
        detail["seconds_by_part"]["mc"] = round(time.perf_counter() - started, 1)
        if self.chat_form:
            started = time.perf_counter()
            self._serve(mode, result, detail, adapter_id, adapter_path)
            detail["seconds_by_part"]["served"] = round(time.perf_counter() - started, 1)
        return result, detail, adapter_id, adapter_path

    def _train(self, mode: str, names: list[str], recipe: list[str] | None, detail: dict[str, Any]):
        """The sample's adapter of ``mode`` (its augmentation first, for aug-ft), trained or reused."""
        from kadapt.augment import augment_kb

        if mode == "aug-ft":
            started = time.perf_counter()
            summary = augment_kb(
                self.catalog, self.kb.slug, names=names, document_ids=self.sample_ids, settings=self.settings
            )
            seconds = time.perf_counter() - started
            spent = _augmentation_tokens(self.catalog, self.kb.id, set(self.sample_ids), names)
            detail["augmentation"] = summary["by_augmenter"]
            detail["augmentation_tokens"] = spent
            detail["augmentation_seconds"] = _augmentation_seconds(summary, seconds, spent, self.settings)
            detail["seconds_by_part"]["augmentation"] = round(seconds, 1)
        started = time.perf_counter()
        adapter_id, adapter_path, train_stats = pilot_adapter(
            self.catalog, self.kb, self.snapshot, mode, self.sample_ids, self.whole, self.train_config,
            self.settings, self.context, recipe,
        )  # fmt: skip
        detail["seconds_by_part"]["training"] = round(time.perf_counter() - started, 1)
        detail["adapter"], detail["adapter_path"] = adapter_id, adapter_path
        detail["training"] = {key: train_stats.get(key) for key in _TRAINING_KEYS}
        return adapter_id, adapter_path

    def _serve(self, mode: str, result, detail: dict[str, Any], adapter_id, adapter_path) -> None:
        """The chat probes asked through the serving path (icl both plain and with context-aware decoding), and
        MC on the same probes, so that "MC - served" compares like with like."""
        from kadapt.evaluate import summarize

        answerer = _answerer(self.catalog, self.kb, mode, adapter_id, adapter_path, self.whole)

        def serve(weight):
            return _serve_mode(
                self.catalog, self.kb, self.snapshot.id, self.chat_form, answerer, len(self.probes), self.settings,
                weight,
            )  # fmt: skip

        detail["served"] = serve(0.0 if mode == "icl" else None)
        weight = self.settings.icl_contrast
        if mode == "icl":
            plain = detail["served"]["by_kind"]
            contrasted = serve(weight) if weight > 0 else None  # 0: never tried, the KB serves plain decoding
            better = contrasted is not None and mean_accuracy(contrasted["by_kind"]) > mean_accuracy(plain)
            detail["decoding"] = {
                "weight": max(weight, 0.0),
                "plain": plain,
                "contrast": contrasted["by_kind"] if contrasted else None,
                "chosen": weight if better else 0.0,
            }
            if better:
                detail["served"] = contrasted
        asked = {probe.id for probe in self.chat_form}
        pairs = [(probe, pick) for probe, pick in zip(self.probes, result.picks, strict=True) if probe.id in asked]
        detail["served"]["mc_by_kind"] = summarize([probe for probe, _ in pairs], [pick for _, pick in pairs])

    def measure_recipes(self, recipes: list[list[str]], index: int, total: int):
        """aug-ft once per augmentation recipe; the best on the probes (served accuracy, else MC) is kept."""
        tried = [(recipe, *self.measure("aug-ft", recipe, recipe)) for recipe in recipes]
        chosen = max(tried, key=lambda row: _recipe_score(row[1].by_kind, row[2]))  # the first of equals
        _, result, detail, adapter_id, adapter_path = chosen
        detail["recipe"] = chosen[0]
        detail["recipes"] = [
            {
                "augmenters": recipe,
                "mc": tried_result.by_kind,
                "served": (tried_detail.get("served") or {}).get("by_kind"),
                "score": round(_recipe_score(tried_result.by_kind, tried_detail), 4),
                "adapter": tried_detail.get("adapter"),
            }
            for recipe, tried_result, tried_detail, _, _ in tried
        ]
        self.note(index, total, f"aug-ft: recipe {'+'.join(chosen[0])} chosen of {len(recipes)}")
        return result, detail, adapter_id, adapter_path


def _sample_digest(sample_ids, probes, kb, settings: Settings, names, recipes) -> str:
    """What a stored measurement depends on: the sample, the probes, the model and how prompts are built."""
    return hashlib.sha256(
        json.dumps(
            [
                sample_ids,
                sorted(probe.id for probe in probes),
                kb.base_model,
                settings.icl_context_tokens,
                settings.retrieval_k,
                settings.icl_contrast,
                names,
                recipes,
                # the served evaluation, its judge and stop, and whether general questions are routed to the base
                ["served", settings.judge, settings.answer_stop, settings.adapter_routing],
                [settings.adapt_qa_pairs, settings.adapt_replay],  # what fine-tuning data hold besides documents
            ]
        ).encode()
    ).hexdigest()[:16]


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
    from kadapt.augment import registered_augmenters
    from kadapt.models import get_model_pool

    settings = settings or get_settings()
    modes = _pilot_modes(modes)
    kb = get_kb(catalog, slug)
    snapshot = latest_snapshot(catalog, kb.id)
    if snapshot is None:
        raise InvalidInput(f"KB {slug!r} has no documents; run `kadapt sync {slug}` or `kadapt kb import` first")
    # a mode the KB is too large for cannot be chosen, so it is not measured either
    too_large = mode_problems(catalog, kb, modes, settings)
    modes = tuple(mode for mode in modes if mode not in too_large)
    documents = snapshot_docs(catalog, snapshot.id)
    warnings: list[str] = [f"{mode} not measured: {reason}." for mode, reason in too_large.items()]
    probes = _kb_probes(catalog, slug, snapshot, documents, settings, warnings)
    sample_ids, whole, pilot_probes = _sample(documents, probes, sample_size or settings.pilot_documents, warnings)
    model = get_model_pool().get(kb.base_model)
    if not hasattr(model, "score_choices"):
        raise InvalidInput(f"model {kb.base_model!r} cannot score probes; the pilot needs a local transformers model")
    train_config = training_config(settings, train)
    names = list(augmenters or settings.adapt_augmenters)
    # the augmentation recipes aug-ft is measured with: given augmenters are one; else KADAPT_ADAPT_RECIPES
    recipes = [names] if augmenters else recipe_list(settings) or [names]
    compare_recipes = bool(settings.adapt_recipes) and not augmenters  # even one: aug-ft trains on it alone
    if "aug-ft" in modes:  # a misspelt augmenter fails now, not after the other modes were measured
        registered_augmenters(
            sorted({name for recipe in recipes for name in recipe}),
            where=" in KADAPT_ADAPT_RECIPES / KADAPT_ADAPT_AUGMENTERS",
        )
    sample_digest = _sample_digest(sample_ids, pilot_probes, kb, settings, names, recipes)
    texts = {doc.id: doc.text for doc in documents}
    kb_tokens = tokens_of(model, list(texts.values()))
    sample_tokens = tokens_of(model, [texts[doc_id] for doc_id in sample_ids]) or 1
    run = _PilotRun(
        catalog, kb, snapshot, settings, context, documents, sample_ids, whole, pilot_probes, model, train_config, {}
    )
    steps = ["floor", *modes]
    run.note(0, len(steps), f"pilot on {len(sample_ids)} of {len(documents)} documents, {len(pilot_probes)} probes")
    scores, stage_seconds = _measure_steps(run, steps, sample_digest, names, recipes if compare_recipes else None)
    return _pilot_result(run, steps, too_large, scores, stage_seconds, (kb_tokens, sample_tokens), warnings)


def _pilot_result(run: _PilotRun, steps, too_large, scores, stage_seconds, tokens, warnings) -> dict[str, Any]:
    """The pilot's estimates: per mode its accuracy (MC and served), costs scaled from the sample to the KB
    (``tokens``: the KB's and the sample's), forgetting and warnings."""
    kb, settings, details = run.kb, run.settings, run.details
    modes = [mode for mode in steps if mode != "floor"]
    scale = tokens[0] / tokens[1]
    throughput = serving_throughput(run.model, settings.data_dir)
    estimates = mode_estimates(
        modes, scores, details, throughput, scale, run.train_config, settings, Workload.from_dict(kb.workload)
    )
    return {
        "kb": {"slug": kb.slug, "title": kb.title},
        "snapshot": {"id": run.snapshot.id, "hash": run.snapshot.hash, "documents": len(run.documents)},
        "pilot": {
            "documents": len(run.sample_ids),
            "kb_documents": len(run.documents),
            "probes": len(run.probes),
            "scale": round(scale, 3),
            "whole_kb": run.whole,
            "kb_tokens": tokens[0],
            "sample_tokens": tokens[1],
            "train": asdict(run.train_config),
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
        "served": _served_report(details, scores, steps, run.chat_form, run.probes, settings),
        "forgetting": {mode: details[mode]["forgetting"] for mode in steps if details[mode].get("forgetting")},
        "warnings": warnings
        + _shortcut_warnings(scores)
        + _mc_only_warnings(run.chat_form, run.probes)
        + forgetting_warnings(details, steps, settings),
    }


def _measure_steps(run: _PilotRun, steps: list[str], sample_digest: str, names, recipes: list[list[str]] | None):
    """Each mode measured (or its stored measurement reused) and stored: (scores per mode, seconds per mode).
    aug-ft runs augmenters ``names``, or is measured once per recipe of ``recipes`` when they are compared."""
    scores: dict[str, Any] = {}
    stage_seconds: dict[str, float] = {}
    for index, mode in enumerate(steps):
        started = time.perf_counter()
        stored = _stored_evaluation(run.catalog, run.snapshot.id, mode, sample_digest, run.train_config)
        if stored is not None:
            scores[mode], run.details[mode] = stored.by_kind, stored.stats
            run.note(index + 1, len(steps), f"{mode}: measured before, reused")
            continue
        if mode == "aug-ft" and recipes:
            result, detail, adapter_id, adapter_path = run.measure_recipes(recipes, index, len(steps))
        else:
            result, detail, adapter_id, adapter_path = run.measure(mode, names, None)
        if mode in FINE_TUNED_MODES:  # aug-ft+rag serves aug-ft's adapter: its forgetting is aug-ft's
            run.note(index, len(steps), f"{mode}: asking general questions with and without the adapter (forgetting)")
            answerer = _answerer(run.catalog, run.kb, mode, adapter_id, adapter_path, run.whole)
            asked = time.perf_counter()
            detail["forgetting"] = _forgetting(run.catalog, run.kb, answerer, run.settings)
            detail.setdefault("seconds_by_part", {})["forgetting"] = round(time.perf_counter() - asked, 1)
        scores[mode], run.details[mode] = result.by_kind, detail
        _store_evaluation(
            run.catalog, run.kb, run.snapshot, mode, adapter_id, result.by_kind, detail, sample_digest,
            run.train_config,
        )  # fmt: skip
        stage_seconds[mode] = round(time.perf_counter() - started, 1)
        summary = ", ".join(f"{k} {v['accuracy']:.2f}" for k, v in result.by_kind.items())
        run.note(index + 1, len(steps), f"{mode}: {summary}")
    return scores, stage_seconds
