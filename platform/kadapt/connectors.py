"""The connector contract: how a kind of source turns into documents.

A connector class has a unique ``kind``, a pydantic ``Config`` and ``load()``. ``load()`` yields, for each
item the source holds:

- a :class:`langchain_core.documents.Document` whose metadata has ``locator`` (stable within the source,
  e.g. a relative path or URL) and optionally ``version`` (a cheap change marker such as a git blob id)
  and ``title``;
- :class:`Unchanged` when the connector can tell, without reading the item, that it matches the version
  kadapt already holds (``self.known_versions``);
- :class:`LoadFailure` when the item could not be read or parsed. The sync records it and goes on; the
  item's last good version stays;
- :class:`ListingIncomplete` when the connector could not list everything the source holds because of an
  error (a start page, robots.txt or a folder that could not be read, a crawl cut by a limit). The sync
  then deletes none of the source's documents that were not listed, and reports the reason as the
  source's error.

Items not yielded at all are treated as deleted from the source, but only when the listing was complete:
a connector that cannot list the source at all raises a :class:`~kadapt.errors.KadaptError` instead
(nothing of the source changes), and one that could list only part of it yields ``ListingIncomplete``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from kadapt.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from langchain_core.documents import Document

    from kadapt.allowances import Allowances
    from kadapt.settings import Settings

__all__ = [
    "Connector",
    "ConnectorConfig",
    "ConnectorContext",
    "Unchanged",
    "LoadFailure",
    "ListingIncomplete",
    "LoadItem",
    "get_connector_class",
    "validate_config",
]


class ConnectorConfig(BaseModel):
    """Base for connector configs: unknown fields are an error, so a typo is caught at ``source add``."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Unchanged:
    locator: str


@dataclass(frozen=True)
class LoadFailure:
    locator: str
    message: str


@dataclass(frozen=True)
class ListingIncomplete:
    """The listing misses items because of an error; ``reason`` says what failed and how to fix it."""

    reason: str


LoadItem = "Document | Unchanged | LoadFailure | ListingIncomplete"


@dataclass
class ConnectorContext:
    """What the platform hands a connector besides its config."""

    settings: Settings
    source_id: int
    work_dir: Path  # a private folder for caches (e.g. a git clone); kept between syncs
    known_versions: Mapping[str, str | None] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)  # saved with the source after a sync
    # what the source may read and reach: those of its KB's owner groups (kadapt.allowances.source_allowances);
    # None means the global ones, as for a KB that no group owns
    allowances: Allowances | None = None


class Connector:
    """Base class of connectors. Subclasses set ``kind`` and ``Config`` and implement ``load``."""

    kind: ClassVar[str]
    Config: ClassVar[type[ConnectorConfig]]
    description: ClassVar[str] = ""

    def __init__(self, config: ConnectorConfig, context: ConnectorContext) -> None:
        self.config = config
        self.context = context

    @property
    def settings(self) -> Settings:
        return self.context.settings

    @property
    def known_versions(self) -> Mapping[str, str | None]:
        return self.context.known_versions

    @property
    def allowances(self) -> Allowances:
        """Folders and private hosts this source may reach (its KB's owner groups'; never kadapt's data)."""
        if self.context.allowances is None:
            from kadapt.allowances import source_allowances

            return source_allowances(self.settings)
        return self.context.allowances

    def load(self) -> Iterator[Document | Unchanged | LoadFailure | ListingIncomplete]:
        raise NotImplementedError

    def check(self) -> None:
        """Validate what can be checked before loading (e.g. allowed roots); raise a KadaptError."""


def get_connector_class(kind: str, plugins=None) -> type[Connector]:
    from kadapt.plugins import get_plugins

    connectors = (plugins or get_plugins()).connectors()
    try:
        return connectors[kind]
    except KeyError:
        known = ", ".join(sorted(connectors)) or "none"
        raise NotFound(f"no connector of kind {kind!r}; installed kinds: {known} (see `kadapt plugins`)") from None


def validate_config(connector_class: type[Connector], config: Mapping[str, Any]) -> ConnectorConfig:
    """Validate a source config, turning pydantic's error into one readable line."""
    try:
        return connector_class.Config.model_validate(dict(config))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "config"
            problems.append(f"{where}: {error['msg']}")
        fields = ", ".join(connector_class.Config.model_fields)
        raise InvalidInput(
            f"invalid config for a {connector_class.kind!r} source: {'; '.join(problems)} (fields: {fields})"
        ) from None
