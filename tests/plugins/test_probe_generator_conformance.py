"""The conformance suite of probe generators: every generator registered through ``register_probe_generators``
(kadapt's own and any installed plugin's) writes probes for a small mixed KB — synthetic facts with their metadata
and free-form biographies — that are well-formed, traceable to the documents they test and balanced. A new
generator is checked as soon as it is installed; one that uses the model (``uses_model`` not False) is ``slow``."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest

from kadapt.augment import SourceDocument
from kadapt.judge import normalise
from kadapt.plugins import get_plugins
from kadapt.probes import ProbeContext, ProbeDraft, validate
from kadapt.synthetic import build_dataset
from tests.conftest import REPO

GENERATORS = get_plugins().contributions("register_probe_generators")
PARAMS = [
    pytest.param(name, marks=() if getattr(generator, "uses_model", True) is False else pytest.mark.slow)
    for name, generator in sorted(GENERATORS.items())
]


def small_kb() -> tuple[list[SourceDocument], dict[str, dict]]:
    """Four synthetic reversal facts (three documents each, their metadata kept) and four biographies."""
    records = build_dataset("reversal").documents[:12]
    records += [json.loads(line) for line in (REPO / "samples/biographies/documents.jsonl").open()][:4]
    documents = [
        SourceDocument(
            id=record["id"],
            title="",
            locator=record["id"],
            text=record["text"],
            content_hash=hashlib.sha256(record["text"].encode()).hexdigest(),
        )
        for record in records
    ]
    return documents, {record["id"]: record.get("metadata") or {} for record in records}


def check_probe(draft, document_ids: set[str]) -> None:
    """One probe: a valid multiple-choice (and chat) form, its answer one of its choices and, in the chat form,
    among the accepted answers, and the documents it tests among those it was given."""
    assert isinstance(draft, ProbeDraft), type(draft)
    validate(draft)  # kind name, question, >= 2 distinct choices, answer index in range, chat form consistent
    answer = draft.choices[draft.answer_index]
    assert answer.strip() and answer in draft.choices
    assert draft.source_ids and set(draft.source_ids) <= document_ids, draft.source_ids
    if draft.chat_question is not None:
        assert normalise(answer) in {normalise(accepted) for accepted in draft.answers}, (answer, draft.answers)


def check_balance(drafts: list[ProbeDraft]) -> None:
    """Per kind and number of choices, the right answer sits at each position as often as at any other, give or
    take one: always picking one position does no better than chance."""
    groups: dict[tuple[str, int], Counter] = {}
    for draft in drafts:
        groups.setdefault((draft.kind, len(draft.choices)), Counter())[draft.answer_index] += 1
    for (kind, width), positions in groups.items():
        counts = [positions[index] for index in range(width)]
        assert max(counts) - min(counts) <= 1, (kind, width, counts)


@pytest.fixture
def context(catalog):
    from kadapt.kbs import create_kb
    from kadapt.settings import get_settings

    documents, metadata = small_kb()
    kb = create_kb(catalog, "conformance")
    return documents, ProbeContext(
        kb=kb, documents=documents, settings=get_settings(), model_spec=kb.base_model, metadata=metadata
    )


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_a_probe_generator_names_and_describes_itself(name):
    generator = GENERATORS[name]
    assert generator.name == name
    assert isinstance(generator.description, str) and generator.description.strip()
    assert isinstance(getattr(generator, "uses_model", True), bool)


@pytest.mark.parametrize("name", PARAMS)
def test_a_probe_generator_writes_well_formed_traceable_balanced_probes(name, context):
    documents, probe_context = context
    drafts = list(GENERATORS[name].generate(documents, probe_context))
    assert drafts, f"{name} wrote no probe for 16 documents (synthetic facts and biographies)"
    ids = {document.id for document in documents}
    for draft in drafts:
        check_probe(draft, ids)
    keys = [(draft.question, tuple(draft.choices)) for draft in drafts]
    assert len(keys) == len(set(keys)), "the same probe twice"
    check_balance(drafts)


@pytest.mark.parametrize("name", PARAMS)
def test_a_probe_generator_tests_only_the_documents_it_is_given(name, context):
    """Generators run on the documents that have no probes yet: each probe of a subset tests one of its
    documents (and may name others of the KB that state the same fact)."""
    documents, probe_context = context
    subset = documents[::2]
    drafts = list(GENERATORS[name].generate(subset, probe_context))
    ids = {document.id for document in subset}
    for draft in drafts:
        check_probe(draft, {document.id for document in documents})
        assert set(draft.source_ids) & ids, (draft.source_ids, sorted(ids))
    assert list(GENERATORS[name].generate([], probe_context)) == []
