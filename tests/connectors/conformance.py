"""The conformance suite every connector's tests subclass (like langchain's VectorStoreIntegrationTests).

A subclass provides the ``source`` fixture: a :class:`SourceUnderTest` over a real source with at least
three documents, the ways to change, delete and break one of them, and the way to make the whole source
unavailable (the folder unmounted, the start page failing, the remote gone).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from pydantic import ValidationError

from kadapt.connectors import Connector, ConnectorContext, ListingIncomplete, LoadFailure, Unchanged
from kadapt.errors import KadaptError


@dataclass
class SourceUnderTest:
    connector_class: type[Connector]
    config: dict[str, Any]
    work_dir: Path
    change: Callable[[], str]  # changes one document's text; returns its locator
    remove: Callable[[], str]  # deletes one document; returns its locator
    break_one: Callable[[], str]  # makes one document unreadable; returns its locator
    # makes the source as a whole unreadable, as an outage would (not an emptied source)
    make_unavailable: Callable[[], None] | None = None


def load(source: SourceUnderTest, known: dict[str, str | None] | None = None):
    from kadapt.settings import get_settings

    context = ConnectorContext(
        settings=get_settings(), source_id=1, work_dir=source.work_dir, known_versions=known or {}
    )
    connector = source.connector_class(source.connector_class.Config.model_validate(source.config), context)
    return list(connector.load())


def documents(items) -> dict[str, Document]:
    return {str(item.metadata["locator"]): item for item in items if isinstance(item, Document)}


def digest(document: Document) -> str:
    return hashlib.sha256(document.page_content.encode()).hexdigest()


class ConnectorConformance:
    @pytest.fixture
    def source(self, kadapt_env) -> SourceUnderTest:  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    def test_has_kind_config_and_description(self, source):
        assert isinstance(source.connector_class.kind, str) and source.connector_class.kind
        assert source.connector_class.description
        for name, field in source.connector_class.Config.model_fields.items():
            assert field.description, f"config field {name!r} has no description"

    def test_config_rejects_unknown_fields(self, source):
        with pytest.raises(ValidationError):
            source.connector_class.Config.model_validate(source.config | {"no_such_option": 1})

    def test_loads_documents_with_unique_locators_and_text(self, source):
        items = load(source)
        loaded = documents(items)
        assert len(loaded) >= 3
        assert len(loaded) == len([item for item in items if isinstance(item, Document)]), "duplicate locators"
        for locator, document in loaded.items():
            assert document.page_content.strip(), f"{locator} has no text"
            assert document.metadata.get("title"), f"{locator} has no title"
        assert not [item for item in items if isinstance(item, LoadFailure)]

    def test_second_load_reports_no_change(self, source):
        first = documents(load(source))
        known = {locator: document.metadata.get("version") for locator, document in first.items()}
        second = load(source, known)
        for item in second:
            if isinstance(item, Unchanged):
                assert item.locator in first
            else:
                assert isinstance(item, Document)
                assert digest(item) == digest(first[item.metadata["locator"]])
        seen = {item.locator if isinstance(item, Unchanged) else item.metadata["locator"] for item in second}
        assert seen == set(first)

    def test_a_change_shows_in_exactly_one_document(self, source):
        first = documents(load(source))
        known = {locator: document.metadata.get("version") for locator, document in first.items()}
        changed = source.change()
        second = load(source, known)
        different = [
            item.metadata["locator"]
            for item in second
            if isinstance(item, Document) and digest(item) != digest(first[item.metadata["locator"]])
        ]
        assert different == [changed]

    def test_a_removed_document_is_not_listed(self, source):
        before = set(documents(load(source)))
        removed = source.remove()
        assert removed in before
        after = load(source)
        listed = {
            item.locator if isinstance(item, (Unchanged, LoadFailure)) else item.metadata["locator"] for item in after
        }
        assert listed == before - {removed}

    def test_a_broken_document_is_a_failure_and_the_rest_loads(self, source):
        before = set(documents(load(source)))
        broken = source.break_one()
        after = load(source)
        failures = {item.locator: item.message for item in after if isinstance(item, LoadFailure)}
        assert list(failures) == [broken]
        assert failures[broken]
        assert set(documents(after)) == before - {broken}

    def test_an_unavailable_source_is_not_listed_as_empty(self, source):
        """A source that cannot be read must not look like one whose documents were all deleted: the
        connector raises a KadaptError (the sync fails, nothing changes) or reports the listing incomplete."""
        assert source.make_unavailable is not None, "the conformance fixture must give make_unavailable"
        assert len(documents(load(source))) >= 3
        source.make_unavailable()
        try:
            items = load(source)
        except KadaptError as exc:
            assert exc.message
            return
        reasons = [item.reason for item in items if isinstance(item, ListingIncomplete)]
        assert reasons and all(reasons), f"an unavailable source was listed as complete: {items}"
