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
adapter (or None) to the serving functions explicitly: what the KB serves does not change.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select

from kadapt.catalog import Adapter, Catalog, KnowledgeBase, Probe, ProbeAnswer
from kadapt.errors import InvalidInput, KadaptError, NotFound
from kadapt.evaluate import proportion
from kadapt.judge import Judge, get_judge, judge_probe
from kadapt.kbs import MODES, get_kb, latest_snapshot
from kadapt.models.base import Completion, GenerationParams, Model
from kadapt.serving import PreparedChat, answer, chat_model, chat_params, prepare_chat
from kadapt.settings import Settings, get_settings
from kadapt.store import VectorStore

__all__ = [
    "SERVED_MODES",
    "ServedAnswer",
    "ServedEvaluation",
    "answer_probes",
    "chat_probes",
    "run_summary",
    "summarize_answers",
]

SERVED_MODES = ("active", *MODES)  # "active": whatever the KB serves now

Progress = Callable[[int, int], None]  # (answers done, answers in all)


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
    served_as: str  # icl-whole-kb | icl-retrieval | adapter:<mode>
    prompt_tokens: int
    completion_tokens: int


@dataclass
class ServedEvaluation:
    """The outcome of one served evaluation: per-kind accuracy with intervals, and every answer."""

    kb: str
    snapshot_id: int
    run_id: str
    mode: str  # the mode that answered: icl | ft | aug-ft
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


def _answering_adapter(catalog: Catalog, kb: KnowledgeBase, mode: str, adapter_id: str | None) -> Adapter | None:
    """The adapter that answers in ``mode`` (None: icl), resolved once so that the whole run uses it even when
    the KB's mode changes meanwhile."""
    from kadapt.adapters import FINE_TUNED_MODES, active_adapter, ready_adapter

    if mode not in SERVED_MODES:
        raise InvalidInput(f"invalid mode {mode!r}; use one of {', '.join(SERVED_MODES)}")
    if adapter_id and mode not in FINE_TUNED_MODES:
        raise InvalidInput(
            f"an adapter ({adapter_id!r}) is evaluated in its fine-tuned mode; give mode "
            f"{' or '.join(FINE_TUNED_MODES)}, not {mode!r}"
        )
    if mode == "active":
        return active_adapter(catalog, kb)  # as serving does: none (icl) when the KB's adapter is gone
    return ready_adapter(catalog, kb, mode, adapter_id) if mode in FINE_TUNED_MODES else None


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
    from kadapt.models import get_model_pool

    settings = settings or get_settings()
    kb = get_kb(catalog, slug)
    adapter = _answering_adapter(catalog, kb, mode, adapter_id)
    snapshot_id, probes, mc_only = chat_probes(catalog, kb, limit=limit)
    judge = judge or get_judge(settings)
    model = chat_model(pool or get_model_pool(), kb, adapter)
    params = chat_params(settings)  # a request that sets no decoding settings
    prepared = [_prepare(catalog, store, kb, model, probe, settings, params, adapter) for probe in probes]
    completions = asyncio.run(_answer_all(model, prepared, params, settings.max_batch_size, progress))
    answers = []
    for probe, chat, completion in zip(probes, prepared, completions, strict=True):
        verdict = judge_probe(probe, completion.text, judge)
        answers.append(
            ServedAnswer(
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
        )
    evaluation = ServedEvaluation(
        kb=kb.slug,
        snapshot_id=snapshot_id,
        run_id=uuid.uuid4().hex,
        mode=adapter.mode if adapter is not None else "icl",
        adapter_id=adapter.id if adapter is not None else None,
        judge=judge.name,
        by_kind=summarize_answers(answers),
        answers=answers,
        mc_only=mc_only,
    )
    _store(catalog, kb, evaluation)
    return evaluation


def _prepare(catalog, store, kb, model, probe: Probe, settings, params, adapter) -> PreparedChat:
    messages = [{"role": "user", "content": probe.chat_question or ""}]
    try:
        return prepare_chat(
            catalog, store, kb, model, messages, settings, max_tokens=params.max_tokens, adapter=adapter
        )
    except KadaptError as exc:
        raise type(exc)(f"probe {probe.id}: {exc.message}") from exc


async def _answer_all(
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


def _store(catalog: Catalog, kb: KnowledgeBase, evaluation: ServedEvaluation) -> None:
    with catalog.session() as session:
        session.add_all(
            ProbeAnswer(
                kb_id=kb.id,
                snapshot_id=evaluation.snapshot_id,
                probe_id=item.probe_id,
                run_id=evaluation.run_id,
                mode=evaluation.mode,
                adapter_id=evaluation.adapter_id,
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
