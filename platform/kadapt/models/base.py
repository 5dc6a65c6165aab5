"""The model contract every backend implements: batched and streaming chat generation, token counting,
and (where the backend can) multiple-choice scoring by log-likelihood."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "MODEL_LOAD_LOCK",
    "ChatMessage",
    "Completion",
    "GenerationParams",
    "Model",
    "ModelBackend",
    "ScoringNotSupported",
]

# transformers builds models under a global "empty weights" patch of torch.nn.Module; two loads at once in
# different threads (an embedder in a sync job, an LLM for a request) can corrupt each other. Every load
# of weights in kadapt holds this lock.
MODEL_LOAD_LOCK = threading.RLock()

ChatMessage = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 256
    temperature: float = 0.0  # 0 means greedy decoding
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    adapter_id: str | None = None  # a LoRA adapter to apply (None: the base model)
    adapter_path: str | None = None
    # context-aware decoding (Shi et al. 2023, "Trusting Your Evidence"): each token is chosen from
    # (1 + w) * logits(prompt) - w * logits(contrast_messages), so that what the prompt's documents say outweighs
    # what the model would answer without them; w = 0 (default) or no contrast messages: plain decoding.
    # Backends that cannot decode this way ignore both.
    contrast_messages: tuple[ChatMessage, ...] = ()
    contrast_weight: float = 0.0

    @property
    def sampling_key(self) -> tuple[Any, ...]:
        """Requests with the same key can share a batch."""
        # the seed is left out: a seeded request draws from a generator of its own (seeded by its seed and prompt), so
        # its answer does not depend on which requests share its batch
        return (self.temperature > 0, round(self.temperature, 4), round(self.top_p, 4), self.adapter_id)


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)


class ScoringNotSupported(NotImplementedError):
    pass


@runtime_checkable
class Model(Protocol):
    """A loaded model, shared by every request in the process."""

    model_id: str
    context_window: int

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Prompt tokens of ``messages`` once formatted for this model."""

    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Completion:
        """Generate one completion (batched with concurrent requests where the backend can)."""

    def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[str | Completion]:
        """Yield the completion's text in pieces as it is generated, then the final :class:`Completion`."""

    def generate_batch(
        self, conversations: Sequence[Sequence[ChatMessage]], params: GenerationParams
    ) -> list[Completion]:
        """Generate completions for many conversations at once (augmentation, probe writing)."""

    def score_choices(
        self, prompt: str, choices: Sequence[str], *, adapter_id: str | None = None, adapter_path: str | None = None
    ) -> list[float]:
        """Summed log-likelihood of each choice as a continuation of ``prompt``; raise ScoringNotSupported."""

    def score_batch(
        self,
        items: Sequence[tuple[str, Sequence[str]]],
        *,
        adapter_id: str | None = None,
        adapter_path: str | None = None,
        row_tokens: int = 2048,
    ) -> list[list[float]]:
        """Score many multiple-choice items at once: for each ``(prompt, choices)`` item, what
        :meth:`score_choices` would return for it (``[]`` for an item without choices), in the items' order.

        ``adapter_id`` / ``adapter_path`` select a LoRA adapter as for :meth:`score_choices`; ``row_tokens``
        is the size of the packed rows a backend may batch items into (a speed setting: it never changes the
        scores). Raise ScoringNotSupported where the backend cannot score."""


class ModelBackend(Protocol):
    """What ``register_models`` registers: a named factory of models."""

    name: str
    description: str

    def open(self, model: str, settings: Any) -> Model:
        """Load ``model`` (an id, path or alias this backend understands). Called once per process per model."""

    # optional, for backends whose models live on this machine (adapters train on them, tokenizers count with
    # them): ``local_path(model, settings) -> str`` the folder of its weights and tokenizer, and
    # ``hub_id(model) -> str`` its Hugging Face id (the name a model server serves it under)
