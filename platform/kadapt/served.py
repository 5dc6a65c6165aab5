"""Served evaluation: answer probes asked through the exact serving path of ``/v1/chat/completions``.

Each answer probe's ``chat_question`` is asked as a one-message chat, with the chat route's own functions
(:mod:`kadapt.serving`): the model from :func:`~kadapt.serving.chat_model`, the prompt from
:func:`~kadapt.serving.prepare_chat` (system prompt, whole-KB or retrieved documents, or the adapter), the
decoding settings of a request that sets none from :func:`~kadapt.serving.chat_params`, and the answer from
:func:`~kadapt.serving.answer`. So what is measured is what an employee is served. The questions go to the
backend together, which batches them as it batches concurrent chat requests.

The judge ``KADAPT_JUDGE`` names (:mod:`kadapt.judge`) rules on each answer against the probe's accepted
answers and its distractors (the multiple-choice form's other choices). Answers and verdicts are stored in
``probe_answers``, one ``run_id`` per evaluation; accuracy per probe kind comes with a 95% Wilson interval.

A mode other than the KB's active one (``icl``, or a fine-tuned mode's adapter) is evaluated by handing its
adapter (or None) to the serving functions explicitly: what the KB serves does not change. :func:`serve_probes`
is the one function that asks, judges and stores: ``kadapt probes answer`` (:func:`answer_probes`) and the pilot
(:mod:`kadapt.pilot`, which also asks the floor: :data:`~kadapt.serving.NO_CONTEXT`) both call it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sqlalchemy import select

from kadapt.catalog import Adapter, Catalog, KnowledgeBase, Probe, ProbeAnswer
from kadapt.errors import InvalidInput, KadaptError, NotFound
from kadapt.evaluate import proportion
from kadapt.judge import Judge, get_judge, judge_probe
from kadapt.kbs import get_kb, latest_snapshot
from kadapt.models.base import Completion, GenerationParams, Model
from kadapt.modes import MODES, RAG_MODE
from kadapt.serving import (
    NO_CONTEXT,
    PreparedChat,
    WithDocuments,
    answer,
    chat_model,
    chat_params,
    prepare_chat,
    serving_adapter,
)
from kadapt.settings import Settings, get_settings
from kadapt.store import VectorStore

__all__ = [
    "SERVED_MODES",
    "AdapterFolder",
    "ServedAnswer",
    "ServedEvaluation",
    "answer_all",
    "answer_probes",
    "mode_answerer",
    "answer_samples",
    "chat_probes",
    "overstatement",
    "run_summary",
    "serve_probes",
    "summarize_answers",
]

SERVED_MODES = ("active", *MODES)  # "active": whatever the KB serves now

Progress = Callable[[int, int], None]  # (answers done, answers in all)


@dataclass(frozen=True)
class AdapterFolder:
    """An adapter that is a folder, not a catalog row (a pilot's sample adapter): what serving needs of one."""

    id: str
    path: str
    mode: str


# who answers: an adapter (catalog row or folder; WithDocuments: with icl's documents in the prompt), None (icl:
# documents in the prompt) or NO_CONTEXT (the floor)
Answerer = Adapter | AdapterFolder | WithDocuments | None | Literal["no-context"]


@dataclass
class ServedAnswer:
    """One probe's served answer and the judge's verdict; ``served_as`` says how the prompt was built."""

    probe_id: int
    kind: str
    question: str
    answer: str
    correct: bool
    reason: str
    f1: float
    served_as: str  # icl-whole-kb | icl-retrieval | adapter:<mode> | no-context | base-routed
    prompt_tokens: int
    completion_tokens: int


@dataclass
class ServedEvaluation:
    """The outcome of one served evaluation: per-kind accuracy with intervals, and every answer."""

    kb: str
    snapshot_id: int
    run_id: str
    mode: str  # the mode that answered: floor | icl | ft | aug-ft
    adapter_id: str | None
    judge: str
    by_kind: dict[str, dict[str, Any]]  # kind -> {correct, n, accuracy, low, high}
    answers: list[ServedAnswer]
    mc_only: int  # probes of the snapshot without a chat form: not asked

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def chat_probes(catalog: Catalog, kb: KnowledgeBase, *, limit: int | None = None) -> tuple[int, list[Probe], int]:
    """The snapshot id, the probes with a chat form of the KB's current snapshot (at most ``limit``, taken in
    turn from each kind so every kind is asked) and how many are MC-only. InvalidInput when none has a chat
    form, saying how to get some."""
    from kadapt.probes import snapshot_probes

    if limit is not None and limit < 1:
        raise InvalidInput(f"limit={limit}: ask at least 1 probe")
    snapshot = latest_snapshot(catalog, kb.id)
    if snapshot is None:
        raise InvalidInput(f"KB {kb.slug!r} has no snapshot yet; sync it first with `kadapt sync {kb.slug}`")
    probes = snapshot_probes(catalog, snapshot.id)
    with_chat = [probe for probe in probes if probe.chat_question and probe.answers]
    if not with_chat:
        held = f"its {len(probes)} probes are all MC-only" if probes else "it has no probes"
        raise InvalidInput(
            f"KB {kb.slug!r} has no probes with a chat form for its current snapshot ({held}); generate them with "
            f"`kadapt probes generate {kb.slug}`, or import them with 'chat_question' and 'answers' fields with "
            f"`kadapt probes import {kb.slug} FILE`"
        )
    return snapshot.id, _in_turn(with_chat, limit), len(probes) - len(with_chat)


def _in_turn(probes: list[Probe], limit: int | None) -> list[Probe]:
    """``probes`` (at most ``limit``) taken one kind after another, so a limit leaves no kind out."""
    if limit is None or limit >= len(probes):
        return probes
    by_kind: dict[str, list[Probe]] = {}
    for probe in probes:
        by_kind.setdefault(probe.kind, []).append(probe)
    queues = [iter(group) for _, group in sorted(by_kind.items())]
    chosen: list[Probe] = []
    while len(chosen) < limit:
        for queue in queues:
            probe = next(queue, None)
            if probe is not None and len(chosen) < limit:
                chosen.append(probe)
    return sorted(chosen, key=lambda probe: probe.id)


def mode_answerer(
    catalog: Catalog, kb: KnowledgeBase, mode: str, adapter_id: str | None
) -> Adapter | WithDocuments | None:
    """The adapter that answers in ``mode`` (None: icl; aug-ft+rag: the aug-ft adapter with documents), resolved
    once so that the whole run uses it even when the KB's mode changes meanwhile."""
    from kadapt.adapters import ready_adapter
    from kadapt.modes import ADAPTER_MODES, trained_mode

    if mode not in SERVED_MODES:
        raise InvalidInput(f"invalid mode {mode!r}; use one of {', '.join(SERVED_MODES)}")
    if adapter_id and mode not in ADAPTER_MODES:
        raise InvalidInput(
            f"an adapter ({adapter_id!r}) is evaluated in a mode served from an adapter; give mode "
            f"{' or '.join(ADAPTER_MODES)}, not {mode!r}"
        )
    if mode == "active":
        return serving_adapter(catalog, kb)  # as serving does: none (icl) when the KB's adapter is gone
    if mode not in ADAPTER_MODES:
        return None
    adapter = ready_adapter(catalog, kb, trained_mode(mode), adapter_id)
    return WithDocuments(adapter) if mode == RAG_MODE else adapter


def answer_probes(
    catalog: Catalog,
    store: VectorStore,
    slug: str,
    *,
    mode: str = "active",
    adapter_id: str | None = None,
    limit: int | None = None,
    pool=None,
    settings: Settings | None = None,
    judge: Judge | None = None,
    progress: Progress | None = None,
) -> ServedEvaluation:
    """Ask the KB's answer probes through the serving path in ``mode`` (``active``: what the KB serves; ``icl``;
    ``ft`` / ``aug-ft``: that mode's ``adapter_id``, or its newest ready adapter), judge and store the answers.

    ``pool`` is the model pool to answer with (the process's by default); ``progress`` is called as answers
    come. Runs its own event loop: call it from a thread, not from a coroutine."""
    settings = settings or get_settings()
    kb = get_kb(catalog, slug)
    adapter = mode_answerer(catalog, kb, mode, adapter_id)
    snapshot_id, probes, mc_only = chat_probes(catalog, kb, limit=limit)
    return serve_probes(
        catalog,
        store,
        kb,
        probes,
        adapter,
        snapshot_id=snapshot_id,
        mc_only=mc_only,
        pool=pool,
        settings=settings,
        judge=judge,
        progress=progress,
    )


def serve_probes(
    catalog: Catalog,
    store: VectorStore,
    kb: KnowledgeBase,
    probes: Sequence[Probe],
    answerer: Answerer,
    *,
    snapshot_id: int,
    mc_only: int = 0,
    pool=None,
    settings: Settings | None = None,
    judge: Judge | None = None,
    progress: Progress | None = None,
    icl_contrast: float | None = None,
) -> ServedEvaluation:
    """Ask ``probes`` (each with a chat form) through the serving path with ``answerer`` (an adapter, None for
    icl, or NO_CONTEXT for the floor), judge the answers and store them under a new run id. ``icl_contrast``:
    icl's context-aware decoding weight (default: the KB's).

    Runs its own event loop: call it from a thread, not from a coroutine."""
    from kadapt.models import get_model_pool

    settings = settings or get_settings()
    asked = [probe for probe in probes if probe.chat_question and probe.answers]
    if len(asked) != len(probes):
        raise InvalidInput(
            f"{len(probes) - len(asked)} of the probes have no chat form (MC-only): they cannot be asked"
        )
    judge = judge or get_judge(settings)
    model = chat_model(pool or get_model_pool(), kb, None if answerer == NO_CONTEXT else answerer)
    params = chat_params(settings)  # a request that sets no decoding settings
    if isinstance(answerer, Adapter | AdapterFolder) and settings.adapter_routing:
        _prefetch_routes(model, kb, probes, answerer)
    prepared = [
        _prepare(catalog, store, kb, model, probe, settings, params, answerer, icl_contrast) for probe in probes
    ]
    completions = asyncio.run(answer_all(model, prepared, params, settings.max_batch_size, progress))
    answers = [
        _judged(probe, chat, completion, judge)
        for probe, chat, completion in zip(probes, prepared, completions, strict=True)
    ]
    mode, adapter_id = _answered_by(answerer)
    evaluation = ServedEvaluation(
        kb=kb.slug,
        snapshot_id=snapshot_id,
        run_id=uuid.uuid4().hex,
        mode=mode,
        adapter_id=adapter_id,
        judge=judge.name,
        by_kind=summarize_answers(answers),
        answers=answers,
        mc_only=mc_only,
    )
    # a pilot's sample adapter is a folder, not a catalog row: its answers name no adapter id
    stored_adapter = answerer.adapter if isinstance(answerer, WithDocuments) else answerer
    _store(catalog, kb, evaluation, catalog_adapter=isinstance(stored_adapter, Adapter))
    return evaluation


def _judged(probe: Probe, chat: PreparedChat, completion, judge: Judge) -> ServedAnswer:
    verdict = judge_probe(probe, completion.text, judge)
    return ServedAnswer(
        probe_id=probe.id,
        kind=probe.kind,
        question=probe.chat_question or "",
        answer=completion.text,
        correct=verdict.correct,
        reason=verdict.reason,
        f1=verdict.f1,
        served_as=chat.mode,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
    )


def _answered_by(answerer: Answerer) -> tuple[str, str | None]:
    """(mode, adapter id) of an answerer: the floor, icl, or an adapter's mode and id."""
    if answerer == NO_CONTEXT:
        return "floor", None
    if answerer is None:
        return "icl", None
    return answerer.mode, answerer.id


def _prefetch_routes(model, kb: KnowledgeBase, probes: Sequence[Probe], adapter: Adapter | AdapterFolder) -> None:
    """Score the routing of every probe's question in one batch (:func:`kadapt.routing.prefetch_routes`): each
    question's prompt is the one serving routes on, so serving then finds its gain scored."""
    from kadapt.prompts import adapter_system_prompt
    from kadapt.routing import prefetch_routes
    from kadapt.serving import adapter_prompt

    chats = [adapter_prompt(kb, [{"role": "user", "content": probe.chat_question or ""}]) for probe in probes]
    prefetch_routes(model, chats, adapter.id, adapter.path, adapter_system_prompt(kb))


def _prepare(catalog, store, kb, model, probe: Probe, settings, params, adapter, icl_contrast=None) -> PreparedChat:
    messages = [{"role": "user", "content": probe.chat_question or ""}]
    try:
        return prepare_chat(
            catalog,
            store,
            kb,
            model,
            messages,
            settings,
            max_tokens=params.max_tokens,
            adapter=adapter,
            icl_contrast=icl_contrast,
        )
    except KadaptError as exc:
        raise type(exc)(f"probe {probe.id}: {exc.message}") from exc


async def answer_all(
    model: Model, prepared: Sequence[PreparedChat], params: GenerationParams, batch: int, progress: Progress | None
) -> list[Completion]:
    """Every prepared chat's answer. Twice a batch is in flight at once, so the backend always has a full
    batch waiting while it decodes one (an OpenAI-compatible server gets no more requests than that)."""
    gate = asyncio.Semaphore(max(1, 2 * batch))
    done = 0

    async def one(chat: PreparedChat) -> Completion:
        nonlocal done
        async with gate:
            completion = await answer(model, chat, params)
        done += 1
        if progress is not None:
            progress(done, len(prepared))
        return completion

    return list(await asyncio.gather(*(one(chat) for chat in prepared)))


def summarize_answers(answers: Sequence[ServedAnswer]) -> dict[str, dict[str, Any]]:
    """Per probe kind: correct, n, accuracy and its 95% Wilson interval (low, high)."""
    return _per_kind((item.kind, item.correct) for item in answers)


def _per_kind(verdicts: Iterable[tuple[str, bool]]) -> dict[str, dict[str, Any]]:
    grouped: dict[str, list[bool]] = {}
    for kind, correct in verdicts:
        grouped.setdefault(kind, []).append(correct)
    return {kind: proportion(sum(hits), len(hits)) for kind, hits in sorted(grouped.items())}


def _store(catalog: Catalog, kb: KnowledgeBase, evaluation: ServedEvaluation, *, catalog_adapter: bool) -> None:
    with catalog.session() as session:
        session.add_all(
            ProbeAnswer(
                kb_id=kb.id,
                snapshot_id=evaluation.snapshot_id,
                probe_id=item.probe_id,
                run_id=evaluation.run_id,
                mode=evaluation.mode,
                adapter_id=evaluation.adapter_id if catalog_adapter else None,
                served_as=item.served_as,
                answer=item.answer,
                correct=item.correct,
                reason=item.reason,
                f1=item.f1,
                judge=evaluation.judge,
                prompt_tokens=item.prompt_tokens,
                completion_tokens=item.completion_tokens,
            )
            for item in evaluation.answers
        )


def run_summary(catalog: Catalog, run_id: str) -> dict[str, dict[str, Any]]:
    """Per probe kind, the accuracy of a stored run's answers (as :func:`summarize_answers`), from the catalog."""
    with catalog.session() as session:
        rows = session.execute(
            select(Probe.kind, ProbeAnswer.correct)
            .join(Probe, Probe.id == ProbeAnswer.probe_id)
            .where(ProbeAnswer.run_id == run_id)
        ).all()
    if not rows:
        raise NotFound(f"no stored answers of run {run_id!r}; run `kadapt probes answer KB` to make some")
    return _per_kind((kind, correct) for kind, correct in rows)


def answer_samples(answers: Sequence[ServedAnswer], per_verdict: int = 3) -> list[dict[str, Any]]:
    """Up to ``per_verdict`` right and as many wrong answers (in probe order, kinds taken in turn), for a report
    to show what the measure counted: question, answer, verdict, the judge's reason."""
    picked: list[ServedAnswer] = []
    for correct in (True, False):
        group = [item for item in answers if item.correct is correct]
        kinds = sorted({item.kind for item in group})
        queues = {kind: [item for item in group if item.kind == kind] for kind in kinds}
        while len([item for item in picked if item.correct is correct]) < per_verdict and any(queues.values()):
            for kind in kinds:
                if queues[kind] and len([item for item in picked if item.correct is correct]) < per_verdict:
                    picked.append(queues[kind].pop(0))
    keys = ("probe_id", "kind", "question", "answer", "correct", "reason")
    return [{key: getattr(item, key) for key in keys} for item in picked]


def overstatement(
    mc: dict[str, dict[str, dict[str, Any]]], served: dict[str, dict[str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """By how much multiple-choice accuracy overstates served accuracy: per mode and kind measured both ways,
    MC, served and MC - served; then per mode over those kinds pooled (kind ``all``)."""
    rows: list[dict[str, Any]] = []
    for mode, by_kind in served.items():
        kinds = [kind for kind in sorted(by_kind) if kind in mc.get(mode, {})]
        for kind in kinds:
            mc_accuracy, served_accuracy = mc[mode][kind]["accuracy"], by_kind[kind]["accuracy"]
            gap = mc_accuracy - served_accuracy
            rows.append({"mode": mode, "kind": kind, "mc": mc_accuracy, "served": served_accuracy, "gap": gap})
        if kinds:
            mc_all = sum(mc[mode][kind]["correct"] for kind in kinds) / sum(mc[mode][kind]["n"] for kind in kinds)
            served_all = sum(by_kind[kind]["correct"] for kind in kinds) / sum(by_kind[kind]["n"] for kind in kinds)
            rows.append({"mode": mode, "kind": "all", "mc": mc_all, "served": served_all, "gap": mc_all - served_all})
    return rows
