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
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select

from kadapt.catalog import Adapter, Catalog, Document, Evaluation, KnowledgeBase, Snapshot, SnapshotDocument
from kadapt.costs import ModeEstimate, Workload, serving_throughput
from kadapt.errors import InvalidInput
from kadapt.jobs import JobContext
from kadapt.kb_limits import mode_problems
from kadapt.kbs import get_kb, latest_snapshot
from kadapt.models.tokens import tokens_of
from kadapt.modes import ADAPTER_MODES, FINE_TUNED_MODES, MODES, RAG_MODE
from kadapt.paths import write_atomic
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
ADAPTER_PROMPT_TOKENS = 30  # the system prompt serving adds in a fine-tuned mode (chat template included)
ICL_TEMPLATE_TOKENS = 60  # the system prompt serving adds before documents (chat template included)


# -- the pilot sample ------------------------------------------------------------------------------------


@dataclass
class SampleDoc:
    id: str
    source_id: int
    text: str
    title: str = ""
    locator: str = ""


def snapshot_docs(catalog: Catalog, snapshot_id: int) -> list[SampleDoc]:
    with catalog.session() as session:
        members = select(SnapshotDocument.document_id).where(SnapshotDocument.snapshot_id == snapshot_id)
        rows = session.execute(
            select(Document.id, Document.source_id, Document.text, Document.title, Document.locator)
            .where(Document.id.in_(members))
            .order_by(Document.id)
        )
        return [SampleDoc(*row) for row in rows]


def pilot_sample(documents: list[SampleDoc], probes, size: int, seed: int = 0) -> tuple[list[str], bool]:
    """Document ids of a stratified sample of about ``size`` documents, and whether it is the whole KB.

    Documents that probes test together (a fact told in several articles, a syllogism's premises) form
    one unit, so a sampled probe always has all its documents; units are drawn from each source in
    proportion to its size, those with probes first (in a large KB only some documents have probes, see
    KADAPT_PROBE_DOCUMENTS). Probes without documents (imported without ``source_ids``) cannot be matched
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
    probed = {doc_id for probe in probes for doc_id in probe.source_ids}
    units: dict[str, list[SampleDoc]] = {}
    for doc in documents:
        units.setdefault(find(doc.id), []).append(doc)
    by_source: dict[int, list[list[SampleDoc]]] = {}
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
        group.sort(key=lambda unit: not any(doc.id in probed for doc in unit))  # stable: still shuffled within
        taken = 0
        for unit in group:
            if taken >= quota[source_id]:
                break
            chosen.extend(doc.id for doc in unit)
            taken += len(unit)
    return sorted(chosen), False


# -- the pilot --------------------------------------------------------------------------------------------


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


def _sample(documents, probes, size: int, warnings: list[str]) -> tuple[list[str], bool, list]:
    """(the sample's document ids, whether it is the whole KB, the probes whose documents it holds)."""
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
    return sample_ids, whole, pilot_probes


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
