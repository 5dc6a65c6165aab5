"""Counting the tokens of plain text with a model."""

from __future__ import annotations

from collections.abc import Iterable

from kadapt.models.base import Model

__all__ = ["token_count", "tokens_of"]


def token_count(model: Model, text: str) -> int:
    """Tokens of a plain text (no chat template): the model's tokenizer when it has one, else its own count of
    the text as one user message."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        return len(tokenizer(text, add_special_tokens=False).input_ids)
    return model.count_tokens([{"role": "user", "content": text}])


def tokens_of(model: Model, texts: Iterable[str]) -> int:
    """The tokens of all ``texts``, summed."""
    return sum(token_count(model, text) for text in texts)
