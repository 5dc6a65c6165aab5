"""Per-KB vector collections in Chroma (embedded by default, a Chroma server by URL)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from kadapt.errors import ConfigError
from kadapt.readers import Audience, hidden_filter, reader_filter
from kadapt.settings import Settings, get_settings

if TYPE_CHECKING:
    from kadapt.catalog import KnowledgeBase

__all__ = ["Hit", "VectorStore", "close_stores", "get_store"]


@dataclass
class Hit:
    chunk_id: str
    document_id: str
    locator: str
    title: str
    text: str
    score: float
    chunk_index: int


class VectorStore:
    """One Chroma client; a collection per knowledge base, named by the KB's id (:meth:`collection_name`).

    Methods take the KB's catalog row (:class:`~kadapt.catalog.KnowledgeBase`), never its slug."""

    def __init__(self, settings: Settings) -> None:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        from kadapt.embeddings import SentenceTransformerEmbedding

        chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
        if settings.chroma_url:
            parsed = urlparse(settings.chroma_url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ConfigError(f"KADAPT_CHROMA_URL={settings.chroma_url!r} is not an http(s) URL")
            try:
                self.client = chromadb.HttpClient(
                    host=parsed.hostname,
                    port=parsed.port or (443 if parsed.scheme == "https" else 80),
                    ssl=parsed.scheme == "https",
                    settings=chroma_settings,
                    database=settings.chroma_database,
                )
            except Exception as exc:  # connection refused, unknown database, ...: one clear line for the user
                raise ConfigError(
                    f"cannot use the Chroma server at {settings.chroma_url} "
                    f"(database {settings.chroma_database!r}): {exc}"
                ) from exc
        else:
            from filelock import FileLock

            settings.chroma_path.mkdir(parents=True, exist_ok=True)
            # Chroma creates its tables when it first opens a directory, and two processes doing so at once (two
            # syncs on a fresh data dir) both run CREATE TABLE: one fails with "table collections already exists".
            with FileLock(settings.chroma_path / "kadapt-open.lock"):
                self.client = chromadb.PersistentClient(path=str(settings.chroma_path), settings=chroma_settings)
        self.embedding = SentenceTransformerEmbedding(settings.embedding_model)

    @staticmethod
    def collection_name(kb: KnowledgeBase) -> str:
        """``kbid-<id>``: KB ids are never reused, so a KB never inherits the vectors of a deleted one of the
        same name (the old names, ``kb-<slug>``, never start with ``kbid-``: their fourth character is '-')."""
        return f"kbid-{kb.id}"

    @staticmethod
    def legacy_collection_name(kb: KnowledgeBase) -> str | None:
        """The name a KB made before ids named collections had (``kb-<slug>``); None for every newer KB."""
        return f"kb-{kb.legacy_slug}" if kb.legacy_slug else None

    def collection(self, kb: KnowledgeBase):
        name = self.collection_name(kb)
        try:
            return self.client.get_collection(name, embedding_function=self.embedding)
        except Exception as exc:
            if not _missing(exc):
                raise
        legacy = self.legacy_collection_name(kb)
        if legacy is not None:
            try:
                self.client.get_collection(legacy, embedding_function=self.embedding).modify(name=name)
            except Exception as exc:  # not there (a KB never synced), or renamed meanwhile by another process
                if not _missing(exc) and "already exists" not in str(exc):
                    raise
        return self.client.get_or_create_collection(
            name, embedding_function=self.embedding, configuration={"hnsw": {"space": "cosine"}}
        )

    def drop(self, kb: KnowledgeBase) -> None:
        """Delete the KB's collection (under its id name and, for an old KB, its slug name)."""
        for name in (self.collection_name(kb), self.legacy_collection_name(kb)):
            if name is None:
                continue
            try:
                self.client.delete_collection(name)
            except Exception as exc:  # chromadb raises NotFoundError/ValueError depending on the backend
                if not _missing(exc):
                    raise

    def add_chunks(
        self, kb: KnowledgeBase, ids: Sequence[str], texts: Sequence[str], metadatas: Sequence[dict[str, Any]]
    ) -> None:
        if ids:
            self.collection(kb).upsert(ids=list(ids), documents=list(texts), metadatas=list(metadatas))

    def delete_document(self, kb: KnowledgeBase, document_id: str) -> None:
        self.collection(kb).delete(where={"document_id": document_id})

    def count(self, kb: KnowledgeBase) -> int:
        return self.collection(kb).count()

    def document_ids(self, kb: KnowledgeBase) -> dict[str, int]:
        """Chunk count per document id, read from the collection (for consistency checks)."""
        result = self.collection(kb).get(include=["metadatas"])
        counts: dict[str, int] = {}
        for metadata in result["metadatas"] or []:
            counts[str(metadata["document_id"])] = counts.get(str(metadata["document_id"]), 0) + 1
        return counts

    def hides_from(self, kb: KnowledgeBase, audience: Audience) -> bool:
        """Whether the KB holds a document ``audience`` may not read (a metadata query of one id, no vectors)."""
        if audience is None:
            return False
        return bool(self.collection(kb).get(where=hidden_filter(audience), limit=1, include=[])["ids"])

    def search(self, kb: KnowledgeBase, query: str, k: int = 5, audience: Audience = None) -> list[Hit]:
        """The ``k`` chunks nearest ``query`` among those ``audience`` may read (None: all; kadapt.readers)."""
        collection = self.collection(kb)
        if collection.count() == 0:
            return []
        result = collection.query(
            query_texts=[query],
            n_results=k,
            where=reader_filter(audience),
            include=["documents", "metadatas", "distances"],
        )
        hits = []
        for chunk_id, text, metadata, distance in zip(
            result["ids"][0], result["documents"][0], result["metadatas"][0], result["distances"][0], strict=True
        ):
            hits.append(
                Hit(
                    chunk_id=chunk_id,
                    document_id=str(metadata["document_id"]),
                    locator=str(metadata["locator"]),
                    title=str(metadata.get("title", "")),
                    text=text,
                    score=round(1.0 - float(distance), 4),
                    chunk_index=int(metadata.get("chunk_index", 0)),
                )
            )
        return hits


def _missing(exc: Exception) -> bool:
    """Whether Chroma's error says the collection does not exist (NotFoundError or ValueError, by backend)."""
    text = str(exc).lower()
    return "does not exist" in text or "not found" in text or type(exc).__name__ == "NotFoundError"


_stores: dict[tuple[str, str | None, str, str | None], VectorStore] = {}
_stores_lock = threading.Lock()


def get_store(settings: Settings | None = None) -> VectorStore:
    """The vector store for the current settings (one client per location per process)."""
    settings = settings or get_settings()
    if settings.chroma_url:
        key = ("", settings.chroma_url, settings.chroma_database, settings.embedding_model)
    else:
        key = (str(settings.chroma_path), None, "", settings.embedding_model)
    with _stores_lock:
        if key not in _stores:
            _stores[key] = VectorStore(settings)
        return _stores[key]


def close_stores() -> None:
    """Forget the clients :func:`get_store` made (an embedded Chroma stays open for the process's life)."""
    with _stores_lock:
        _stores.clear()
