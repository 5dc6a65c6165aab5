"""What every synthetic dataset is made of: documents and mirrored probe pairs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kadapt.errors import InvalidInput

PROBE_KINDS = ("verbatim", "rephrase", "reversal", "syllogism", "multi-hop", "holdout")


@dataclass
class Dataset:
    """Training documents and held-out probes, both in ``kadapt kb import`` / probe-file format."""

    name: str
    description: str
    documents: list[dict]  # {"id": str, "text": str, "metadata": {"synthetic": {...}}}
    probes: list[dict]  # {"question", "choices", "answer_index", "kind", "source_ids", "chat_question", "answers"}

    def write_jsonl(self, folder: Path) -> tuple[Path, Path]:
        """Write ``documents.jsonl`` and ``probes.jsonl`` (one JSON object a line) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = folder / "documents.jsonl", folder / "probes.jsonl"
        for path, rows in zip(paths, (self.documents, self.probes), strict=True):
            path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        return paths


# what a probe asks: its cloze question, the right choice, its documents, and its chat form (a natural
# question with every answer the KB makes true, the choice first)
_Ask = tuple[str, str, list[str], tuple[str, list[str]]]


def _probe(kind: str, question: str, choices: list[str], answer: str, source_ids: list[str], chat) -> dict:
    chat_question, answers = chat
    return {
        "question": question,
        "choices": choices,
        "answer_index": choices.index(answer),
        "kind": kind,
        "source_ids": sorted(source_ids),
        "chat_question": chat_question,
        "answers": answers,
    }


class _Mirror:
    """Emits probes in mirrored pairs: one choice list, each probe's answer the other's distractor; the first
    probe's answer alternates between positions from one pair of a kind to the next."""

    def __init__(self) -> None:
        self.probes: list[dict] = []
        self._pairs: dict[str, int] = {}

    def pair(self, kind: str, first: _Ask, second: _Ask) -> None:
        (question_a, answer_a, sources_a, chat_a), (question_b, answer_b, sources_b, chat_b) = first, second
        if answer_a == answer_b:
            raise ValueError(f"mirrored probes need different answers, got {answer_a!r} twice")
        count = self._pairs.get(kind, 0)
        self._pairs[kind] = count + 1
        choices = [answer_a, answer_b] if count % 2 == 0 else [answer_b, answer_a]
        self.probes.append(_probe(kind, question_a, list(choices), answer_a, sources_a, chat_a))
        self.probes.append(_probe(kind, question_b, list(choices), answer_b, sources_b, chat_b))


def _check_size(name: str, size: int, minimum: int, *, even: bool = False) -> None:
    if size < minimum or (even and size % 2):
        need = f"an even number of at least {minimum}" if even else f"at least {minimum}"
        raise InvalidInput(f"{name} dataset: size must be {need}, got {size}")


def _finish(name: str, description: str, documents: list[dict], probes_of) -> Dataset:
    """The dataset of ``documents``, its probes built by ``probes_of`` from their ``metadata["synthetic"]``
    records in document-id order (as :func:`kadapt.synthetic.probes_from_documents` rebuilds them)."""
    records = sorted(
        ((str(doc["id"]), doc["metadata"]["synthetic"]) for doc in documents), key=lambda record: record[0]
    )
    return Dataset(name=name, description=description, documents=documents, probes=probes_of(records))
