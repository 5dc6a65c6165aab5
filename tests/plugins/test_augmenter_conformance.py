"""The conformance suite of augmenters: every augmenter registered through ``register_augmenters`` (kadapt's own
and any installed plugin's) is run over a three-document KB, directly and through ``kadapt.augment.augment_kb``:
its drafts tie to the documents they came from, its dependency follows its declared scope, and what the pipeline
stores is valid for the KB's snapshot. A new augmenter is checked as soon as it is installed; augmenters outside
``MODEL_FREE`` may use the model and are ``slow``."""

from __future__ import annotations

import dataclasses
import json

import pytest

from kadapt.augment import AugmentContext, Draft, SourceDocument
from kadapt.plugins import get_plugins
from tests.conftest import REPO

AUGMENTERS = get_plugins().contributions("register_augmenters")
MODEL_FREE = {"sentence-split", "reverse"}  # kadapt's rule-based augmenters: fast, and they never load the model
PARAMS = [pytest.param(name, marks=() if name in MODEL_FREE else pytest.mark.slow) for name in sorted(AUGMENTERS)]
TEXTS = [json.loads(line)["text"] for line in (REPO / "samples/biographies/documents.jsonl").open()][:3]


@pytest.fixture
def kb(catalog, kadapt_env):
    """A KB of three one-sentence biographies, synced; its documents as augmenters get them."""
    from kadapt.augment import kb_documents
    from kadapt.kbs import add_source, create_kb, get_kb
    from kadapt.settings import get_settings
    from kadapt.sync import sync_kb

    docs = kadapt_env / "docs"
    docs.mkdir()
    for index, text in enumerate(TEXTS):
        (docs / f"person-{index}.md").write_text(text + "\n")
    create_kb(catalog, "conformance")
    add_source(catalog, get_settings(), "conformance", "files", {"path": str(docs)})
    assert sync_kb(catalog, "conformance").added == 3
    kb = get_kb(catalog, "conformance")
    return kb, kb_documents(catalog, kb.id)


def context_for(kb, documents: list[SourceDocument]) -> AugmentContext:
    from kadapt.settings import get_settings

    return AugmentContext(kb=kb, documents=documents, settings=get_settings(), model_spec=kb.base_model)


def check_draft(draft, batch: list[SourceDocument], documents: list[SourceDocument], scope: str) -> None:
    """A draft has text (empty for a generation the augmenter rejected, which still reports its tokens) and a kind,
    and names the documents it came from: its first one of the batch it was written for (the one its tokens are
    counted to), all of them of the KB; a local draft exactly one."""
    assert isinstance(draft, Draft), type(draft)
    assert isinstance(draft.text, str), draft
    assert isinstance(draft.kind, str) and 0 < len(draft.kind) <= 32, draft.kind
    assert isinstance(draft.source_ids, tuple) and draft.source_ids, draft
    assert draft.source_ids[0] in {doc.id for doc in batch}, draft.source_ids
    assert set(draft.source_ids) <= {doc.id for doc in documents}, draft.source_ids
    if scope == "local":
        assert len(draft.source_ids) == 1, draft.source_ids
    assert min(draft.prompt_tokens, draft.generated_tokens) >= 0


@pytest.mark.parametrize("name", sorted(AUGMENTERS))
def test_an_augmenter_names_describes_and_scopes_itself(name):
    augmenter = AUGMENTERS[name]
    assert augmenter.name == name
    assert augmenter.scope in ("local", "global")
    assert isinstance(augmenter.description, str) and augmenter.description.strip()
    assert isinstance(augmenter.batch_documents, int) and augmenter.batch_documents >= 1


@pytest.mark.parametrize("name", sorted(AUGMENTERS))
def test_an_augmenters_dependency_follows_its_scope(name, kb):
    """A local augmenter's outputs for a document depend on that document only; a global one's on the whole KB.
    Either way a changed document is augmented again."""
    row, documents = kb
    augmenter = AUGMENTERS[name]
    first, other = documents[0], documents[1]
    before = augmenter.dependency(first, context_for(row, documents))
    assert isinstance(before, str) and before
    assert augmenter.dependency(first, context_for(row, documents)) == before  # deterministic
    changed_first = dataclasses.replace(first, text=first.text + " More.", content_hash="1" * 64)
    changed = [changed_first, *documents[1:]]
    assert augmenter.dependency(changed_first, context_for(row, changed)) != before
    changed_other = [
        first,
        dataclasses.replace(other, text=other.text + " More.", content_hash="2" * 64),
        *documents[2:],
    ]
    after_other = augmenter.dependency(first, context_for(row, changed_other))
    if augmenter.scope == "local":
        assert after_other == before, "a local augmenter's dependency changed with another document"
    else:
        assert after_other != before, "a global augmenter's dependency ignored the rest of the KB"


@pytest.mark.parametrize("name", PARAMS)
def test_an_augmenters_drafts_tie_to_their_source_documents(name, kb):
    row, documents = kb
    augmenter = AUGMENTERS[name]
    context = context_for(row, documents)
    drafts = []
    for document in documents:
        batch = [document]
        for draft in augmenter.augment(batch, context):
            check_draft(draft, batch, documents, augmenter.scope)
            drafts.append(draft)
    if name in MODEL_FREE:
        assert drafts and all(draft.text.strip() for draft in drafts), f"{name} wrote nothing for three biographies"
        assert context._model is None, f"{name} loaded the model"
        assert all(draft.prompt_tokens == draft.generated_tokens == 0 for draft in drafts)


@pytest.mark.parametrize("name", PARAMS)
def test_what_the_pipeline_stores_is_tied_to_the_snapshots_document_hashes(name, catalog, kb):
    """Through ``augment_kb``: every stored augmentation names its source documents with the content hashes of the
    KB's snapshot and carries the augmenter's scope, is valid for that snapshot, and a second run has nothing to do."""
    from sqlalchemy import select

    from kadapt.augment import augment_kb, valid_augmentations
    from kadapt.catalog import Augmentation, Document
    from kadapt.kbs import latest_snapshot

    row, _ = kb
    summary = augment_kb(catalog, "conformance", names=[name])
    assert summary["processed"] == 3
    with catalog.session() as session:
        hashes = dict(session.execute(select(Document.id, Document.content_hash)).all())
        stored = list(session.scalars(select(Augmentation).where(Augmentation.augmenter == name)))
    assert len(stored) == summary["by_augmenter"][name]["added"]
    if name in MODEL_FREE:
        assert stored
    for augmentation in stored:
        assert augmentation.scope == AUGMENTERS[name].scope
        assert augmentation.source_hashes and all(
            hashes[doc] == digest for doc, digest in augmentation.source_hashes.items()
        )
    snapshot = latest_snapshot(catalog, row.id)
    assert {a.id for a in valid_augmentations(catalog, row.id, snapshot.id) if a.augmenter == name} == {
        a.id for a in stored
    }
    assert augment_kb(catalog, "conformance", names=[name])["processed"] == 0
