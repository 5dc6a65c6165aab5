"""Synthetic knowledge with nonsense words, after Lampinen et al. 2025 (arXiv 2505.00661).

Facts use made-up entity names so the model cannot know them beforehand; each fact has a known reversal,
so generated augmentations and generalization probes can be checked exactly.

Three benchmark datasets (:data:`DATASETS`, built with :func:`build_dataset`) turn such facts into training
documents plus held-out probes:

- ``reversal``: comparative facts ("Glon are more dangerous than femp."), each in several short articles;
  probes ask the fact as stated (``verbatim``) and from the other side (``reversal``).
- ``syllogism``: pairs of premises ("All glon are femp. No femp are zaik."); probes ask which of three
  conclusions follows (``syllogism``).
- ``semantic``: a hierarchy of animal categories with properties that members inherit; probes ask stated
  facts in other words (``rephrase``), from the other side (``reversal``), one step of inheritance
  (``syllogism``), two steps (``multi-hop``) and properties of a category whose own properties are never
  stated (``holdout``).

A probe is scored by the summed log-likelihood of each choice as a continuation of its question (the text
scored is ``question + " " + choice``), so questions are cloze statements written in the documents' style.
Probes are balanced against the shortcuts a small model takes: wherever the design allows, probes come in
mirrored pairs with the same choice list and swapped answers, so every choice string is the answer exactly
as often as it is a distractor, the answer sits at each position equally often and a model that scores only
the choices (name priors, lengths, positions) gets exactly chance.

Every probe also has a chat form: a natural question (``chat_question``) and every answer the KB makes
true (``answers``, the choice first), e.g. "Which animals are femp less dangerous than?" -> ["glon"].

Every document carries its structured content under ``metadata["synthetic"]``; :func:`probes_from_documents`
rebuilds the probes from that alone, so a knowledge base imported from ``documents.jsonl`` can be probed
again without the probe file. Import one dataset per knowledge base: datasets draw separate words, but
nothing guarantees that two datasets never share one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from kadapt.errors import InvalidInput
from kadapt.synthetic._common import PROBE_KINDS, Dataset
from kadapt.synthetic._reversal import _reversal_probes, reversal_dataset
from kadapt.synthetic._semantic import _semantic_probes, semantic_dataset
from kadapt.synthetic._syllogism import _syllogism_probes, syllogism_dataset
from kadapt.synthetic._templates import RELATIONS
from kadapt.synthetic._words import ComparativeFact, comparative_facts, fresh_words, is_correct_reversal, nonsense_words

__all__ = [
    "DATASETS",
    "PROBE_KINDS",
    "RELATIONS",
    "ComparativeFact",
    "Dataset",
    "build_dataset",
    "comparative_facts",
    "fresh_words",
    "is_correct_reversal",
    "nonsense_words",
    "probes_from_documents",
    "reversal_dataset",
    "semantic_dataset",
    "syllogism_dataset",
]


DATASETS: dict[str, Callable[..., Dataset]] = {
    "reversal": reversal_dataset,
    "syllogism": syllogism_dataset,
    "semantic": semantic_dataset,
}
_PROBE_BUILDERS: dict[str, Callable[[list[tuple[str, dict]]], list[dict]]] = {
    "reversal": _reversal_probes,
    "syllogism": _syllogism_probes,
    "semantic": _semantic_probes,
}


def build_dataset(name: str, size: int | None = None, seed: int = 0) -> Dataset:
    """The dataset ``name`` (a key of :data:`DATASETS`) with ``size`` facts, premise pairs or root categories
    (each dataset's default when None), deterministic for a given ``seed``."""
    builder = DATASETS.get(name)
    if builder is None:
        raise InvalidInput(f"unknown synthetic dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return builder(seed=seed) if size is None else builder(size=size, seed=seed)


def probes_from_documents(documents: Iterable[tuple[str, str, dict]]) -> list[dict]:
    """The probes for ``(document id, text, metadata)`` triples, rebuilt from ``metadata["synthetic"]`` alone
    (documents without it are ignored; the text is never read). For the documents of a built dataset this
    returns exactly its ``probes``, in the same order whatever the order of the documents."""
    grouped: dict[str, list[tuple[str, dict]]] = {name: [] for name in _PROBE_BUILDERS}
    for doc_id, _text, metadata in documents:
        synthetic = (metadata or {}).get("synthetic")
        if not isinstance(synthetic, dict):
            continue
        dataset = synthetic.get("dataset")
        if dataset not in grouped:
            known = ", ".join(_PROBE_BUILDERS)
            raise InvalidInput(f"document {doc_id!r}: unknown synthetic dataset {dataset!r}; known: {known}")
        grouped[dataset].append((str(doc_id), synthetic))
    probes: list[dict] = []
    for dataset, records in grouped.items():
        records.sort(key=lambda record: record[0])
        try:
            probes += _PROBE_BUILDERS[dataset](records) if records else []
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(
                f"{dataset} documents carry malformed synthetic metadata ({exc!r}); re-import them from `build_dataset`"
            ) from exc
    return probes
