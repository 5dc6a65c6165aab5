"""Scoring probes per mode: the multiple-choice log-likelihood of each choice given the question.

The choices are never shown in the prompt (as in Lampinen et al. 2025): each choice is scored as the
continuation of the question, and the highest summed log-probability is the model's answer. Modes:

- ``floor``: the base model, no documents, no adapter: what the model guesses from the question alone;
- ``icl``: the KB's documents before the question, as serving would put them (the whole KB when it fits
  ``KADAPT_ICL_CONTEXT_TOKENS``, else the top chunks retrieved for the question);
- ``ft`` / ``aug-ft``: the base model with the mode's adapter, no documents.
- ``aug-ft+rag``: the aug-ft adapter with icl's documents.

Accuracy comes with a 95% Wilson interval; a result is flagged *shortcut level* when its lower bound does
not clear the best of chance and the simple shortcuts (always the first, last, shortest or longest choice).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kadapt.catalog import Probe
from kadapt.models.tokens import token_count
from kadapt.modes import MODES
from kadapt.probes import balance

__all__ = [
    "EVAL_MODES",
    "ModeScore",
    "icl_contexts",
    "proportion",
    "score_mode",
    "summarize",
    "wilson",
]

EVAL_MODES = ("floor", *MODES)
ICL_HEADER = "Reference documents:\n\n"


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for a proportion (95% by default); (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # rounding can put a bound a hair past the estimate at 0 or n correct; the interval always holds it
    return max(0.0, min(p, centre - margin)), min(1.0, max(p, centre + margin))


def proportion(correct: int, n: int) -> dict[str, Any]:
    """``correct`` of ``n`` as correct, n, accuracy and its 95% Wilson interval (low, high)."""
    low, high = wilson(correct, n)
    return {"correct": correct, "n": n, "accuracy": correct / n if n else 0.0, "low": low, "high": high}


@dataclass
class ModeScore:
    mode: str
    by_kind: dict[str, dict[str, Any]]
    picks: list[int]
    stats: dict[str, Any] = field(default_factory=dict)


def summarize(probes: Sequence[Probe], picks: Sequence[int]) -> dict[str, dict[str, Any]]:
    """Per probe kind: correct, n, accuracy, 95% interval, chance and whether it is at shortcut level."""
    shortcuts = balance(probes)
    grouped: dict[str, list[bool]] = {}
    for probe, pick in zip(probes, picks, strict=True):
        grouped.setdefault(probe.kind, []).append(pick == probe.answer_index)
    out = {}
    for kind, hits in sorted(grouped.items()):
        summary = proportion(sum(hits), len(hits))
        info = shortcuts[kind]
        best_shortcut = max(info["chance"], info["first"], info["last"], info["shortest"], info["longest"])
        out[kind] = summary | {
            "chance": info["chance"],
            "best_shortcut": best_shortcut,
            "shortcut_level": summary["low"] <= best_shortcut,
        }
    return out


def _score_items(model, items: list[tuple[str, list[str]]], adapter_id: str | None, adapter_path: str | None):
    if hasattr(model, "score_batch"):
        return model.score_batch(items, adapter_id=adapter_id, adapter_path=adapter_path)
    return [
        model.score_choices(prompt, choices, adapter_id=adapter_id, adapter_path=adapter_path)
        for prompt, choices in items
    ]


def score_mode(
    model,
    mode: str,
    probes: Sequence[Probe],
    *,
    contexts: Sequence[str] | None = None,
    adapter_id: str | None = None,
    adapter_path: str | None = None,
) -> ModeScore:
    """Score ``probes`` in ``mode``: ``contexts`` (icl) are put before each question; an adapter (ft modes)
    is applied. Returns the picks and the per-kind summary."""
    items = []
    for index, probe in enumerate(probes):
        prompt = (contexts[index] if contexts else "") + probe.question
        gap = "" if not probe.question or probe.question[-1].isspace() else " "
        items.append((prompt, [gap + choice for choice in probe.choices]))
    started = time.perf_counter()
    scores = _score_items(model, items, adapter_id, adapter_path) if items else []
    seconds = time.perf_counter() - started
    picks = [max(range(len(row)), key=row.__getitem__) for row in scores]
    tokens = [token_count(model, prompt) for prompt, _ in items]
    stats = {
        "probes": len(probes),
        "seconds": round(seconds, 3),
        "prompt_tokens_mean": round(sum(tokens) / len(tokens), 1) if tokens else None,
    }
    return ModeScore(mode, summarize(probes, picks) if probes else {}, picks, stats)


def icl_contexts(
    probes: Sequence[Probe], documents: Sequence[Any], *, model, store, kb, settings
) -> tuple[list[str], str, int]:
    """The documents each probe gets in icl mode: those a chat asking the probe's question is served with
    (:func:`kadapt.serving.icl_context`, at the budget of a served answer), in the same order (most relevant
    last), under a plain-text header. ``documents`` (the KB's, with id, title, locator and text) go in whole when
    they fit. Returns the contexts, which of the two it was ("whole-kb" or "retrieval") and how many documents a
    prompt holds at most."""
    from kadapt.serving import DEFAULT_MAX_TOKENS, icl_budget, icl_context

    def budget(question: str) -> int:
        asked = model.count_tokens([{"role": "user", "content": question}])
        return icl_budget(model, settings, asked, DEFAULT_MAX_TOKENS)

    longest = max(probes, key=lambda probe: len(probe.question), default=None)
    whole = (
        bool(documents)
        and longest is not None
        and icl_context(model, documents, [], budget(longest.question), settings.retrieval_k).how == "icl-whole-kb"
    )
    contexts, held = [], 0
    for probe in probes:
        hits = store.search(kb, probe.question, k=max(settings.retrieval_k, 8))
        context = icl_context(model, documents, hits, budget(probe.question), settings.retrieval_k, whole=whole)
        contexts.append(ICL_HEADER + "\n\n".join(reversed(context.blocks)) + "\n\n")
        held = max(held, len(context.sources))
    return contexts, "whole-kb" if whole else "retrieval", held
