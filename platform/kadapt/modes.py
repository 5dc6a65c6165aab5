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
    "TERMS",
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


# what the console and the report say a mode or term means, in one sentence each
TERMS: dict[str, str] = {
    "icl": "in-context learning: the KB's documents (or the chunks retrieved for the question) go into the prompt "
    "of every question; nothing is trained, and every question pays for the longer prompt.",
    "ft": "fine-tuning: a LoRA adapter is trained on the documents once; questions are answered from what it "
    "learned, with short prompts.",
    "aug-ft": "augmented fine-tuning: the model first rewrites the documents (rephrasings, reversals, inferences "
    "across documents), then an adapter is trained on documents and rewrites; it generalizes better than ft.",
    "aug-ft+rag": "the aug-ft adapter answering with retrieved documents in the prompt as well.",
    "snapshot": "the state of the KB's documents after a sync; adapters and decisions name the snapshot they were "
    "made on.",
    "cost-aware": "the default policy: the cheapest mode over the workload's horizon whose accuracy (lower 95% "
    "bound) meets the requirement on every probe kind; if none does, the most accurate.",
    "requirement": "the accuracy every cared-for probe kind must reach (the lower bound of its 95% interval).",
    "no-documents baseline": "the base model answering without any document: what it knows already.",
    "break-even": "the number of queries after which one mode's one-off cost is paid back by its lower cost per query.",
}
