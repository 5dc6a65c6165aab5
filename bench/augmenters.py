"""Augmenter yield and correctness on a free-form KB (default: samples/biographies, 34 fictitious people).

    .venv/bin/python bench/augmenters.py [--kb samples/biographies/documents.jsonl] [--local] [--show 3]

Per augmenter: yield (the share of documents with at least one kept output) and, where it can be checked
exactly, correctness:

- `sentence-split`: every output is a verbatim stretch of its document;
- `reverse`: every output undoes exactly (reversed back, it equals its sentence), holds every entity of
  its sentence intact, uses exactly the sentence's words, and holds the document's person whole (the
  record's `metadata.person`, known independently of the entity heuristic);
- `local` (only with --local: it runs the embedded generator model): yield, and the share of kept
  reversals that hold the person's name whole; whether a reversal is true needs a reader or a judge.

Every augmenter also gets "person whole": the share of documents whose person is named whole in at least
one kept output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run(augmenter, documents, context) -> dict[str, list]:
    """Kept outputs (non-empty drafts) per document id."""
    kept: dict[str, list] = {document.id: [] for document in documents}
    for start in range(0, len(documents), augmenter.batch_documents):
        for draft in augmenter.augment(documents[start : start + augmenter.batch_documents], context):
            if draft.text.strip():
                kept[draft.source_ids[0]].append(draft)
    return kept


def check_sentence_split(draft, text: str, person: str) -> bool:
    return draft.text in " ".join(text.split())


def check_reverse(draft, text: str, person: str) -> bool:
    from kadapt.entities import restore, reverse_sentence
    from kadapt.text import sentences

    for sentence in sentences(text):
        reversal = reverse_sentence(sentence)
        if reversal.text != draft.text:
            continue
        return (
            restore(draft.text, reversal.entities) == sentence
            and all(entity in draft.text for entity in reversal.entities)
            and sorted(draft.text[:-1].split()) == sorted(sentence[:-1].split())
            and (person not in sentence or person in draft.text)
        )
    return False


def check_local(draft, text: str, person: str) -> bool:
    return draft.kind != "reversal" or person in draft.text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kb", type=Path, default=REPO / "samples" / "biographies" / "documents.jsonl")
    parser.add_argument("--local", action="store_true", help="also run the model-based `local` augmenter")
    parser.add_argument("--show", type=int, default=3, help="example outputs to print per augmenter")
    args = parser.parse_args()
    os.environ.setdefault("KADAPT_MODELS_DIR", str(REPO / ".kadapt" / "models"))
    os.environ.setdefault("KADAPT_DATA_DIR", str(REPO / ".kadapt" / "bench"))
    from kadapt.augment import AugmentContext, SourceDocument
    from kadapt.settings import get_settings
    from kadapt_augmenters import LocalRewrite, ReverseTraining, SentenceSplit

    records = load(args.kb)
    documents = [
        SourceDocument(record["id"], record["id"], record["id"], record["text"], str(index))
        for index, record in enumerate(records)
    ]
    people = {record["id"]: (record.get("metadata") or {}).get("person", "") for record in records}
    texts = {record["id"]: record["text"] for record in records}
    context = AugmentContext(kb=None, documents=documents, settings=get_settings(), model_spec="smollm2-135m")
    checks: list[tuple[object, Callable]] = [
        (SentenceSplit(), check_sentence_split),
        (ReverseTraining(), check_reverse),
    ]
    if args.local:
        checks.append((LocalRewrite(), check_local))

    print(f"{len(documents)} documents from {args.kb.relative_to(REPO) if args.kb.is_relative_to(REPO) else args.kb}")
    print(f"{'augmenter':<16}{'outputs':>8}{'yield':>14}{'correct':>18}{'person whole':>15}  check")
    examples = []
    for augmenter, check in checks:
        kept = run(augmenter, documents, context)
        rows = [(augmenter.name, kept)]
        if augmenter.name == "local":  # a document's rephrasing does not make up for a missing reversal
            for kind in ("reversal", "rephrase"):
                only = {doc_id: [draft for draft in drafts if draft.kind == kind] for doc_id, drafts in kept.items()}
                rows.append((f"local/{kind}", only))
        for name, by_document in rows:
            outputs = [(doc_id, draft) for doc_id, drafts in by_document.items() for draft in drafts]
            covered = sum(bool(drafts) for drafts in by_document.values())
            correct = sum(check(draft, texts[doc_id], people[doc_id]) for doc_id, draft in outputs)
            # documents whose person is named whole in some output: an entity split apart teaches nothing of it
            named = sum(any(people[doc_id] in draft.text for draft in drafts) for doc_id, drafts in by_document.items())
            yield_text = f"{covered}/{len(documents)} {covered / len(documents):.2f}"
            named_text = f"{named}/{len(documents)} {named / len(documents):.2f}"
            correct_text = f"{correct}/{len(outputs)} {correct / len(outputs):.2f}" if outputs else "-"
            columns = f"{len(outputs):>8}{yield_text:>14}{correct_text:>18}{named_text:>15}"
            print(f"{name:<16}{columns}  {check.__name__}")
        examples += [(augmenter.name, draft.text) for drafts in kept.values() for draft in drafts][: args.show]
    for name, text in examples:
        print(f"  {name}: {text}")


if __name__ == "__main__":
    sys.exit(main())
