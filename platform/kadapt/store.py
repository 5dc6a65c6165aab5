"""Per-KB vector collections in Chroma (embedded by default, a Chroma server by URL)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from kadapt.errors import ConfigError
from kadapt.settings import Settings, get_settings

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
    """One Chroma client; a collection ``kb-<slug>`` per knowledge base."""

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
            settings.chroma_path.mkdir(parents=True, exist_ok=True)
            self.client = chromadb.PersistentClient(path=str(settings.chroma_path), settings=chroma_settings)
        self.embedding = SentenceTransformerEmbedding(settings.embedding_model)

    @staticmethod
    def collection_name(kb_slug: str) -> str:
        return f"kb-{kb_slug}"

    def collection(self, kb_slug: str):
        return self.client.get_or_create_collection(
            self.collection_name(kb_slug),
            embedding_function=self.embedding,
            configuration={"hnsw": {"space": "cosine"}},
        )

    def drop(self, kb_slug: str) -> None:
        try:
            self.client.delete_collection(self.collection_name(kb_slug))
        except Exception as exc:  # chromadb raises NotFoundError/ValueError depending on the backend
            if "does not exist" not in str(exc) and "not found" not in str(exc).lower():
                raise

    def add_chunks(
        self, kb_slug: str, ids: Sequence[str], texts: Sequence[str], metadatas: Sequence[dict[str, Any]]
    ) -> None:
        if ids:
            self.collection(kb_slug).upsert(ids=list(ids), documents=list(texts), metadatas=list(metadatas))

    def delete_document(self, kb_slug: str, document_id: str) -> None:
        self.collection(kb_slug).delete(where={"document_id": document_id})

    def count(self, kb_slug: str) -> int:
        return self.collection(kb_slug).count()

    def document_ids(self, kb_slug: str) -> dict[str, int]:
        """Chunk count per document id, read from the collection (for consistency checks)."""
        result = self.collection(kb_slug).get(include=["metadatas"])
        counts: dict[str, int] = {}
        for metadata in result["metadatas"] or []:
            counts[str(metadata["document_id"])] = counts.get(str(metadata["document_id"]), 0) + 1
        return counts

    def search(self, kb_slug: str, query: str, k: int = 5) -> list[Hit]:
        collection = self.collection(kb_slug)
        if collection.count() == 0:
            return []
        result = collection.query(query_texts=[query], n_results=k, include=["documents", "metadatas", "distances"])
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
