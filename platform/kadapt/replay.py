"""Replay: the base model's own answers to generic chat prompts, mixed into an adapter's training data.

An adapter trained only on a KB's facts drifts from the base model's general chat behaviour. Replaying the
base model's answers to a small fixed set of generic prompts (shipped in ``kadapt/data/replay_prompts.json``),
with the loss on the answers, anchors it. The answers are written once per base model (greedy) and cached under
the data dir (``replay/<model>-<digest>.json``); a change of the prompts makes a new cache.
:mod:`kadapt.forgetting` measures whether the anchor holds, on other questions.
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path

from kadapt.models.base import GenerationParams, Model
from kadapt.paths import write_atomic
from kadapt.settings import Settings

__all__ = ["REPLAY_MAX_TOKENS", "looping", "replay_answers", "replay_prompts"]

REPLAY_MAX_TOKENS = 96  # an answer cut there ends at its last whole sentence
_SENTENCE_END = re.compile(r"(?<=[A-Za-z)\"'])[.!?](?=\s|$)")  # not a list's "1."
_MIN_WORDS = 4  # a shorter answer (a list's first marker, a cut-off title) teaches nothing general


def looping(text: str) -> bool:
    """Whether an answer mostly repeats itself (fewer than half its word trigrams distinct): a small model's loop,
    which an adapter must not learn as the base model's behaviour."""
    words = re.findall(r"\w+", text.lower())
    trigrams = list(zip(words, words[1:], words[2:], strict=False))
    return len(trigrams) >= 6 and len(set(trigrams)) < len(trigrams) / 2


def replay_prompts() -> list[str]:
    """The packaged generic prompts, in order."""
    data = json.loads(resources.files("kadapt").joinpath("data", "replay_prompts.json").read_text(encoding="utf-8"))
    return list(data["prompts"])


def _cache_path(settings: Settings, model_key: str, prompts: list[str]) -> Path:
    digest = hashlib.sha256(json.dumps([prompts, REPLAY_MAX_TOKENS]).encode()).hexdigest()[:12]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_key)
    return settings.data_dir / "replay" / f"{safe}-{digest}.json"


def _whole_sentences(text: str) -> str:
    """``text`` up to its last sentence end: an answer cut by the token limit must not teach stopping mid-way."""
    ends = [match.end() for match in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]].strip() if ends else ""


def replay_answers(
    model_key: str, settings: Settings, load_model, count: int | None = None, prompts: list[str] | None = None
) -> list[tuple[str, str]]:
    """(prompt, base model's answer) for the first ``count`` replay prompts (all by default; ``prompts`` in
    place of the packaged ones), from the cache of ``model_key`` (the base model's name) or answered now by
    ``load_model()`` (called only then), greedy, each in a chat of its own without a system prompt of ours (the
    model's own default). Answers of fewer than four words after the cut, or that loop (:func:`looping`), are left
    out."""
    prompts = list(prompts) if prompts is not None else replay_prompts()
    cache = _cache_path(settings, model_key, prompts)
    if cache.is_file():
        answers = json.loads(cache.read_text())["answers"]
    else:
        model: Model = load_model()
        chats = [[{"role": "user", "content": prompt}] for prompt in prompts]
        completions = model.generate_batch(chats, GenerationParams(max_tokens=REPLAY_MAX_TOKENS))
        answers = [
            completion.text.strip() if completion.finish_reason == "stop" else _whole_sentences(completion.text)
            for completion in completions
        ]
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cache, json.dumps({"model": model_key, "prompts": prompts, "answers": answers}, indent=2))
    pairs = [
        (prompt, answer)
        for prompt, answer in zip(prompts, answers, strict=True)
        if len(answer.split()) >= _MIN_WORDS and not looping(answer)
    ]
    return pairs[:count] if count is not None else pairs
