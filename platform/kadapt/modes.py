"""The ways a KB is served: the one home of their names.

- ``icl``: documents (the whole KB, or retrieved chunks) in the prompt of every question;
- ``ft``: a LoRA adapter trained on the documents;
- ``aug-ft``: a LoRA adapter trained on the documents and their augmentations;
- ``aug-ft+rag``: the aug-ft adapter answering with retrieved documents in the prompt, as icl builds it.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "ADAPTER_MODES",
    "FINE_TUNED_MODES",
    "FineTunedMode",
    "MODES",
    "Mode",
    "RAG_MODE",
    "trained_mode",
]

Mode = Literal["icl", "ft", "aug-ft", "aug-ft+rag"]
FineTunedMode = Literal["ft", "aug-ft"]

MODES: tuple[Mode, ...] = get_args(Mode)
FINE_TUNED_MODES: tuple[FineTunedMode, ...] = get_args(FineTunedMode)  # the modes that train an adapter
RAG_MODE: Mode = "aug-ft+rag"
ADAPTER_MODES: tuple[Mode, ...] = (*FINE_TUNED_MODES, RAG_MODE)  # the modes served from an adapter


def trained_mode(mode: str) -> str:
    """The mode whose adapter serves ``mode``: aug-ft+rag answers with the aug-ft adapter."""
    return "aug-ft" if mode == RAG_MODE else mode
