"""How large a KB each mode accepts: ``KADAPT_MAX_KB_TOKENS_FT`` and ``KADAPT_MAX_KB_TOKENS_AUG_FT``.

Training reads every token of the KB each epoch, and augmentation writes text for every sentence, so the
one-off cost of ft and aug-ft grows with the KB; icl is served by retrieval and has no such limit (a sync
caps the documents a KB holds instead, ``KADAPT_MAX_KB_DOCUMENTS``). A KB's size is the tokens of its
current snapshot's documents in its own model's tokenizer, the figure the pilot scales costs by.

The limits are checked where the work starts: a train or augment job over the limit is refused when it is
submitted (and fails before writing anything if the KB grew by the time it runs); the pilot leaves such a
mode out and the decision names it as not eligible, with the reason.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from sqlalchemy import LargeBinary, cast, func, select

from kadapt.catalog import Catalog, Document, KnowledgeBase, Snapshot, SnapshotDocument
from kadapt.errors import ConfigError, KBTooLarge
from kadapt.settings import Settings, get_settings

__all__ = ["MODE_LIMITS", "check_mode", "document_chars", "kb_tokens", "mode_problems"]

# mode -> setting (aug-ft+rag serves the aug-ft adapter)
MODE_LIMITS = {"ft": "max_kb_tokens_ft", "aug-ft": "max_kb_tokens_aug_ft", "aug-ft+rag": "max_kb_tokens_aug_ft"}
# Tokens a document can have beyond one per byte: every tokenizer kadapt uses spends at least one byte per
# token, plus a word-start marker or (estimating backends) a few tokens of message framing.
_TOKENS_PER_DOCUMENT_MARGIN = 4


def _setting(field: str) -> str:
    return "KADAPT_" + field.upper()


def mode_problems(catalog: Catalog, kb: KnowledgeBase, modes, settings: Settings | None = None) -> dict[str, str]:
    """The modes among ``modes`` the KB is too large for, each with the reason (size, limit, setting)."""
    settings = settings or get_settings()
    limits = {mode: getattr(settings, MODE_LIMITS[mode]) for mode in modes if mode in MODE_LIMITS}
    snapshot = _latest_snapshot(catalog, kb.id)
    if not limits or snapshot is None:
        return {}
    if _upper_bound(catalog, snapshot) <= min(limits.values()):
        return {}  # cannot be over any limit: no need to load a tokenizer
    tokens = kb_tokens(catalog, kb, snapshot, settings)
    return {
        mode: (
            f"KB {kb.slug!r} has {tokens:,} tokens, over the {limit:,} that {mode} accepts "
            f"({_setting(MODE_LIMITS[mode])}); raise the setting, remove documents, or serve the KB in icl"
        )
        for mode, limit in limits.items()
        if tokens > limit
    }


def check_mode(catalog: Catalog, kb: KnowledgeBase | str, mode: str, settings: Settings | None = None) -> None:
    """Raise :class:`~kadapt.errors.KBTooLarge` when the KB is over ``mode``'s limit."""
    if isinstance(kb, str):
        from kadapt.kbs import get_kb

        kb = get_kb(catalog, kb)
    problem = mode_problems(catalog, kb, [mode], settings).get(mode)
    if problem:
        raise KBTooLarge(problem)


def kb_tokens(catalog: Catalog, kb: KnowledgeBase, snapshot: Snapshot, settings: Settings | None = None) -> int:
    """Tokens of the snapshot's documents in the KB model's tokenizer: counted once per snapshot and model,
    then kept in the snapshot's ``token_counts`` (a snapshot's documents never change)."""
    with catalog.session() as session:
        counts = session.scalar(select(Snapshot.token_counts).where(Snapshot.id == snapshot.id)) or {}
    if kb.base_model in counts:
        return int(counts[kb.base_model])
    try:
        count = _token_counter(kb.base_model, settings or get_settings())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load model {kb.base_model!r} to measure the size of KB {kb.slug!r}: {exc}") from exc
    total = 0
    with catalog.session() as session:
        texts = session.scalars(
            select(Document.text).where(Document.id.in_(_members(snapshot.id))).execution_options(yield_per=64)
        )
        for batch in texts.partitions():
            total += count(list(batch))
    with _counts_lock, catalog.session() as session:  # a new dict: the JSON column sees only assignments
        row = session.get(Snapshot, snapshot.id)
        if row is not None:
            row.token_counts = {**(row.token_counts or {}), kb.base_model: total}
    return total


_counts_lock = threading.Lock()  # two counts of one snapshot in this process do not drop each other's model


def document_chars(session, kb_id: int) -> tuple[int, int]:
    """(documents, characters of their texts) the KB holds now, summed by the database: no text is read."""
    documents, characters = session.execute(
        select(func.count(), func.coalesce(func.sum(func.length(Document.text)), 0)).where(Document.kb_id == kb_id)
    ).one()
    return int(documents), int(characters)


def _latest_snapshot(catalog: Catalog, kb_id: int) -> Snapshot | None:
    from kadapt.kbs import latest_snapshot

    return latest_snapshot(catalog, kb_id)


def _members(snapshot_id: int):
    return select(SnapshotDocument.document_id).where(SnapshotDocument.snapshot_id == snapshot_id)


def _upper_bound(catalog: Catalog, snapshot: Snapshot) -> int:
    """A bound on the snapshot's tokens from its byte count, computed by the database."""
    with catalog.session() as session:
        dialect = session.get_bind().dialect.name
        if dialect == "sqlite":
            size: Any = func.length(cast(Document.text, LargeBinary))
        elif dialect == "postgresql":
            size = func.octet_length(Document.text)
        else:  # characters, at the most bytes UTF-8 spends on one
            size = func.length(Document.text) * 4
        total, documents = session.execute(
            select(func.coalesce(func.sum(size), 0), func.count()).where(Document.id.in_(_members(snapshot.id)))
        ).one()
    return int(total) + _TOKENS_PER_DOCUMENT_MARGIN * int(documents)


def _token_counter(model_spec: str, settings: Settings):
    """A function counting the tokens of a list of texts: the local model's tokenizer alone (no weights are
    loaded), else the backend's own count."""
    from kadapt.models import get_model_pool, local_model_path

    path = local_model_path(model_spec, settings)
    if path is not None:
        tokenizer = _tokenizer(path)

        def count(texts: list[str]) -> int:
            encoded = tokenizer(texts, add_special_tokens=False, verbose=False)
            return sum(len(ids) for ids in encoded["input_ids"])

        return count
    from kadapt.models.tokens import tokens_of

    model = get_model_pool().get(model_spec)
    return lambda texts: tokens_of(model, texts)


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)
