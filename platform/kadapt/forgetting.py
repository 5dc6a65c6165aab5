"""Forgetting: what an adapter costs the model's general answers.

A small fixed set of general questions that the base model answers correctly (shipped in
``kadapt/data/forgetting_questions.json``; none of them is a replay prompt) is asked through the serving path —
:func:`kadapt.serving.prepare_chat` builds the prompt a chat on the KB gets with the adapter (its system prompt
and the question), :func:`kadapt.serving.answer` answers it — once with the adapter and once with the same prompt
and no adapter. ``KADAPT_JUDGE`` rules on each answer. The drop is relative: (base - adapter) / base.

The served answers go through adapter routing (:mod:`kadapt.routing`): a question not about the KB is answered by
the base model. The questions routed so are asked of the adapter too, so that the result also says what the
adapter alone would cost (``adapter_alone_accuracy``, ``adapter_alone_drop``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from typing import Any

from kadapt.catalog import Catalog, KnowledgeBase
from kadapt.errors import InvalidInput
from kadapt.judge import Judge, get_judge
from kadapt.settings import Settings, get_settings
from kadapt.store import VectorStore

__all__ = [
    "FORGETTING_MAX_TOKENS",
    "FORGETTING_TOLERANCE",
    "Forgetting",
    "GeneralQuestion",
    "adapter_forgetting",
    "forgetting_questions",
    "measure_forgetting",
]

# an answer names its fact in its first sentence; a longer cap only costs time (decoding is otherwise the
# serving default: greedy)
FORGETTING_MAX_TOKENS = 48
# a relative drop above this is reported as forgetting (pilot warnings, report)
FORGETTING_TOLERANCE = 0.05

# The base model's answers to the general questions, per model and exact prompts and decoding settings: every
# adapter of a KB (the pilot's ft and aug-ft) is compared with the same ones, asked once per process.
_base_answers: OrderedDict[str, list] = OrderedDict()
_BASE_ANSWERS_KEPT = 16
_base_lock = threading.Lock()


def _base_key(base_model, chats, params) -> str:
    asked = [[chat.messages, repr(chat.params(params))] for chat in chats]
    content = [base_model.model_id, getattr(base_model, "autocast", None), asked]  # autocast: the engine's bf16
    return hashlib.sha256(json.dumps(content, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class GeneralQuestion:
    question: str
    answers: list[str]
    distractors: list[str] = field(default_factory=list)


@dataclass
class Forgetting:
    """Accuracy on the general questions with and without the adapter, and the relative drop (0.0: none)."""

    kb: str
    adapter_id: str
    questions: int
    base_accuracy: float
    adapter_accuracy: float
    relative_drop: float
    answers: list[dict[str, Any]]  # per question: question, base and adapter answers and verdicts
    # adapter routing (kadapt.routing): general questions the served path gave to the base model, and the accuracy
    # and drop of the adapter answering every question itself (equal to the served ones when none was routed)
    routed_to_base: int = 0
    adapter_alone_accuracy: float | None = None
    adapter_alone_drop: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def forgetting_questions() -> list[GeneralQuestion]:
    """The packaged general questions, in order."""
    text = resources.files("kadapt").joinpath("data", "forgetting_questions.json").read_text(encoding="utf-8")
    return [GeneralQuestion(**item) for item in json.loads(text)["questions"]]


def measure_forgetting(
    catalog: Catalog,
    store: VectorStore,
    slug: str,
    *,
    adapter_id: str | None = None,
    pool=None,
    settings: Settings | None = None,
    judge: Judge | None = None,
    questions: list[GeneralQuestion] | None = None,
) -> Forgetting:
    """Ask the general ``questions`` (the packaged ones by default) on KB ``slug`` with its adapter
    ``adapter_id`` (default: the adapter the KB serves from) and with the same prompts without an adapter."""
    from kadapt.adapters import active_adapter
    from kadapt.catalog import Adapter
    from kadapt.kbs import get_kb
    from kadapt.modes import FINE_TUNED_MODES

    kb = get_kb(catalog, slug)
    if adapter_id:
        with catalog.session() as session:
            adapter = session.get(Adapter, adapter_id)
        if adapter is None or adapter.kb_id != kb.id or adapter.state != "ready":
            raise InvalidInput(
                f"KB {slug!r} has no ready adapter {adapter_id!r}; list its adapters with `kadapt adapters {slug}`"
            )
    else:
        adapter = active_adapter(catalog, kb)
        if adapter is None:
            raise InvalidInput(
                f"KB {slug!r} serves no adapter (mode {kb.active_mode}); give --adapter ID, or serve one with "
                f"`kadapt kb set-mode {slug} {FINE_TUNED_MODES[0]}`"
            )
    return adapter_forgetting(
        catalog, store, kb, adapter, pool=pool, settings=settings, judge=judge, questions=questions
    )


def _answers(base_model, model, with_adapter, adapter, params, settings) -> tuple[list, list, list, list[int]]:
    """(base answers, served answers, the adapter's own answers, indexes of the questions routed to the base
    model), all asked together so that the backend batches them (one batch per adapter). A routed question's
    served answer is the base model's own (not asked twice); it is asked of the adapter too: what it alone would
    answer."""
    from kadapt.served import answer_all
    from kadapt.serving import ROUTED_TO_BASE

    without = [replace(chat, adapter_id=None, adapter_path=None) for chat in with_adapter]
    routed = [index for index, chat in enumerate(with_adapter) if chat.mode == ROUTED_TO_BASE]
    forced = [replace(with_adapter[index], adapter_id=adapter.id, adapter_path=adapter.path) for index in routed]
    kept = [chat for chat in with_adapter if chat.mode != ROUTED_TO_BASE]

    key = _base_key(base_model, without, params)
    with _base_lock:
        known = _base_answers.get(key)

    async def together():
        batch = settings.max_batch_size
        asked = answer_all(model, kept + forced, params, batch, None)
        if known is not None:
            return known, await asked
        return await asyncio.gather(answer_all(base_model, without, params, batch, None), asked)

    base, tuned = asyncio.run(together())
    with _base_lock:
        _base_answers[key] = base
        _base_answers.move_to_end(key)
        while len(_base_answers) > _BASE_ANSWERS_KEPT:
            _base_answers.popitem(last=False)
    given = iter(tuned[: len(kept)])
    served = [base[index] if index in routed else next(given) for index in range(len(with_adapter))]
    alone = list(served)
    for index, done in zip(routed, tuned[len(kept) :], strict=True):
        alone[index] = done
    return [done.text for done in base], [done.text for done in served], [done.text for done in alone], routed


def _judged(questions, base, served, alone, routed, judge: Judge) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Per question its answers and verdicts, and the right answers counted for base, served and alone."""

    def right(text: str, item: GeneralQuestion):
        return judge.judge(text, accepted=item.answers, distractors=item.distractors, question=item.question)

    answers, counts = [], {"base": 0, "served": 0, "alone": 0}
    for index, item in enumerate(questions):
        verdicts = {"base": right(base[index], item), "served": right(served[index], item)}
        verdicts["alone"] = verdicts["served"] if alone[index] == served[index] else right(alone[index], item)
        for name, verdict in verdicts.items():
            counts[name] += verdict.correct
        answers.append(
            {
                "question": item.question,
                "base_answer": base[index],
                "base_correct": verdicts["base"].correct,
                "adapter_answer": served[index],
                "adapter_correct": verdicts["served"].correct,
                "adapter_reason": verdicts["served"].reason,
                "routed_to_base": index in routed,
            }
            | (
                {"adapter_alone_answer": alone[index], "adapter_alone_correct": verdicts["alone"].correct}
                if index in routed
                else {}
            )
        )
    return answers, counts


def adapter_forgetting(
    catalog: Catalog,
    store: VectorStore,
    kb: KnowledgeBase,
    adapter,
    *,
    pool=None,
    settings: Settings | None = None,
    judge: Judge | None = None,
    questions: list[GeneralQuestion] | None = None,
) -> Forgetting:
    """Forgetting of ``adapter`` on ``kb``: a catalog Adapter row, or any object with id, path and mode (a pilot's
    sample adapter folder, :class:`kadapt.served.AdapterFolder`)."""
    from kadapt.models import get_model_pool
    from kadapt.serving import chat_model, chat_params, prepare_chat

    settings = settings or get_settings()
    questions = questions if questions is not None else forgetting_questions()
    if not questions:
        raise InvalidInput("no general questions to ask")
    judge = judge or get_judge(settings)
    model = chat_model(pool or get_model_pool(), kb, adapter)
    params = chat_params(settings, max_tokens=FORGETTING_MAX_TOKENS)
    with_adapter = [
        prepare_chat(
            catalog, store, kb, model, [{"role": "user", "content": item.question}], settings,
            max_tokens=params.max_tokens, adapter=adapter,
        )
        for item in questions
    ]  # fmt: skip
    # the base model in this process: a LoRA server (KADAPT_LORA_SERVER_URL) applies the KB's adapter to every answer
    base_model = chat_model(pool or get_model_pool(), kb, None)
    base, served, alone, routed = _answers(base_model, model, with_adapter, adapter, params, settings)

    answers, counts = _judged(questions, base, served, alone, routed, judge)
    total = len(questions)
    base_accuracy = counts["base"] / total

    def drop(right_answers: int) -> float:
        return round((base_accuracy - right_answers / total) / base_accuracy, 4) if base_accuracy else 0.0

    return Forgetting(
        kb=kb.slug,
        adapter_id=adapter.id,
        questions=total,
        base_accuracy=round(base_accuracy, 4),
        adapter_accuracy=round(counts["served"] / total, 4),
        relative_drop=drop(counts["served"]),
        answers=answers,
        routed_to_base=len(routed),
        adapter_alone_accuracy=round(counts["alone"] / total, 4),
        adapter_alone_drop=drop(counts["alone"]),
    )
