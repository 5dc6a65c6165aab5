"""Catalog tables (SQLAlchemy 2). Schema changes go through Alembic migrations in ``kadapt/migrations``.

Every derived artifact is keyed by the snapshot it came from; later tables (augmentations, probes,
adapters, evaluations, decisions) reference ``snapshots.id`` the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "Base",
    "KnowledgeBase",
    "Source",
    "Document",
    "DocumentError",
    "Snapshot",
    "SnapshotDocument",
    "Job",
    "ApiKey",
    "AuditEvent",
    "CatalogLock",
    "Conversation",
    "RevokedSession",
    "Augmentation",
    "AugmentationUnit",
    "Adapter",
    "Probe",
    "ProbeUnit",
    "Evaluation",
    "ProbeAnswer",
    "Decision",
    "utc",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


def utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive time is taken as UTC already (SQLite hands times back naive)."""
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON, datetime: DateTime(timezone=True)}


class KnowledgeBase(Base):
    __tablename__ = "knowledge_bases"
    __table_args__ = {"sqlite_autoincrement": True}  # ids are never reused

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    base_model: Mapped[str] = mapped_column(String(300), default="smollm2-135m")
    policy: Mapped[str] = mapped_column(String(64), default="cost-aware")
    workload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    reader_groups: Mapped[list[str]] = mapped_column(default=list)
    owner_groups: Mapped[list[str]] = mapped_column(default=list)
    active_mode: Mapped[str] = mapped_column(String(16), default="icl")
    active_adapter: Mapped[str | None] = mapped_column(String(500), default=None)
    generator_model: Mapped[str | None] = mapped_column(String(300), default=None)  # augmentations; None = base
    # context-aware decoding weight of its icl answers (KADAPT_ICL_CONTRAST), set when a pilot measured it better
    # than plain decoding; 0: plain
    icl_contrast: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    # the slug this KB's Chroma collection and folders were named by before they were named by id (KBs made
    # before migration 0007): kadapt renames them on first use; None for every KB created since
    legacy_slug: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    sources: Mapped[list[Source]] = relationship(back_populates="kb", cascade="all, delete-orphan")


class Source(Base):
    __tablename__ = "sources"
    __table_args__ = {"sqlite_autoincrement": True}  # ids are never reused

    id: Mapped[int] = mapped_column(primary_key=True)
    kb_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    schedule: Mapped[str | None] = mapped_column(String(100), default=None)
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)  # connector bookkeeping, e.g. last commit
    last_sync_at: Mapped[datetime | None] = mapped_column(default=None)
    # when the scheduler (kadapt.scheduler) syncs it next; None without a schedule
    next_sync_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    kb: Mapped[KnowledgeBase] = relationship(back_populates="sources")


class Document(Base):
    """One document as last loaded successfully; its chunks live in the KB's Chroma collection."""

    __tablename__ = "documents"
    __table_args__ = (UniqueConstraint("source_id", "locator"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256(source id + locator)
    kb_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), index=True)
    locator: Mapped[str] = mapped_column(String(2000))
    title: Mapped[str] = mapped_column(String(500), default="")
    content_hash: Mapped[str] = mapped_column(String(64))
    version: Mapped[str | None] = mapped_column(String(200), default=None)  # cheap change marker
    text: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class DocumentError(Base):
    """A document that could not be read or parsed in a source's latest sync."""

    __tablename__ = "document_errors"
    __table_args__ = (UniqueConstraint("source_id", "locator"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(primary_key=True)
    kb_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), index=True)
    locator: Mapped[str] = mapped_column(String(2000))
    message: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Snapshot(Base):
    """The state of a KB's documents: a hash over its (document id, content hash) pairs."""

    __tablename__ = "snapshots"
    __table_args__ = (Index("ix_snapshots_kb_created", "kb_id", "id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(primary_key=True)
    kb_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"))
    hash: Mapped[str] = mapped_column(String(64), index=True)
    document_count: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str | None] = mapped_column(String(32), default=None)
    # totals over the snapshot's document texts, so chat can tell whether the KB fits a prompt without
    # reading it; None for snapshots recorded before the totals were kept (computed once, then stored)
    text_chars: Mapped[int | None] = mapped_column(BigInteger, default=None)
    token_counts: Mapped[dict[str, Any]] = mapped_column(default=dict)  # model name -> tokens of all texts
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SnapshotDocument(Base):
    __tablename__ = "snapshot_documents"

    snapshot_id: Mapped[int] = mapped_column(ForeignKey("snapshots.id", ondelete="CASCADE"), primary_key=True)
    document_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    # the document's names when the snapshot was recorded, so that a later snapshot can say what it removed
    locator: Mapped[str | None] = mapped_column(String(2000), default=None)
    title: Mapped[str | None] = mapped_column(String(500), default=None)


class Job(Base):
    """A durable unit of work (sync, augment, probe, train, evaluate, adapt) with progress and log."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    kb_id: Mapped[int | None] = mapped_column(
        ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True, default=None
    )
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int | None] = mapped_column(Integer, default=None)
    message: Mapped[str] = mapped_column(String(500), default="")
    log: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text, default=None)
    runner: Mapped[str] = mapped_column(String(64), default="inprocess")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # the token of the attempt that runs the job now: every write of an attempt checks it, so an attempt
    # superseded by a resume (its process thought dead) stops instead of racing the new one
    owner: Mapped[str | None] = mapped_column(String(32), default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)


class ApiKey(Base):
    """An API key: only an HMAC of the key is stored; the key itself is shown once at creation."""

    __tablename__ = "api_keys"
    __table_args__ = {"sqlite_autoincrement": True}  # ids are never reused

    id: Mapped[int] = mapped_column(primary_key=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)  # public part, for lookup
    key_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(16))  # admin | editor | reader
    groups: Mapped[list[str]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)  # None: never expires


class Augmentation(Base):
    """Model- or rule-written training text, traceable to the documents (and their versions) it came from.

    It is valid for a snapshot when every source document is in the snapshot with the recorded content hash.
    """

    __tablename__ = "augmentations"
    __table_args__ = (UniqueConstraint("kb_id", "augmenter", "text_hash"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(primary_key=True)
    kb_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("snapshots.id", ondelete="SET NULL"), default=None)
    augmenter: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(16))  # local | global
    kind: Mapped[str] = mapped_column(String(32))  # sentence, cumulative, rephrase, reversal, inference, ...
    source_hashes: Mapped[dict[str, Any]] = mapped_column(default=dict)  # document id -> content hash
    text: Mapped[str] = mapped_column(Text)
    text_hash: Mapped[str] = mapped_column(String(64))
    generator_model: Mapped[str | None] = mapped_column(String(300), default=None)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    generated_tokens: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AugmentationUnit(Base):
    """A (document, augmenter) pair already processed at a given dependency hash, so a rerun skips it."""

    __tablename__ = "augmentation_units"

    kb_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), primary_key=True)
    augmenter: Mapped[str] = mapped_column(String(64), primary_key=True)
    document_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dependency_hash: Mapped[str] = mapped_column(String(64))
    outputs: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    generated_tokens: Mapped[int] = mapped_column(Integer, default=0)
    done_at: Mapped[datetime] = mapped_column(default=utcnow)


class Adapter(Base):
    """A LoRA adapter trained on one snapshot of a KB, stored as a standard PEFT folder."""

    __tablename__ = "adapters"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kb_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("snapshots.id", ondelete="SET NULL"), default=None)
    mode: Mapped[str] = mapped_column(String(16))  # ft | aug-ft
    base_model: Mapped[str] = mapped_column(String(300))
    path: Mapped[str] = mapped_column(String(1000))
    state: Mapped[str] = mapped_column(String(16), default="training")  # training | ready | failed
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    stats: Mapped[dict[str, Any]] = mapped_column(default=dict)
    job_id: Mapped[str | None] = mapped_column(String(32), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ready_at: Mapped[datetime | None] = mapped_column(default=None)
    # a warm start continues its parent's weights on what changed since the parent's snapshot; ``warm_starts``
    # counts the warm starts since the last full training (0 for a full one)
    parent_id: Mapped[str | None] = mapped_column(String(32), default=None)
    warm_starts: Mapped[int] = mapped_column(Integer, default=0)


class Probe(Base):
    """A held-out question testing one way of generalizing from a KB; never trained on.

    Every probe has a multiple-choice form (``question``, ``choices``, ``answer_index``) and may have a
    chat form: ``chat_question``, a natural question as an employee would ask it, and ``answers``, the
    accepted answers (aliases included) a free-form reply is judged against. A probe without a chat
    question is MC-only. Probes belong to the snapshot they were made for; ``generator`` names the probe
    generator (or ``import``), ``source_ids`` the documents a probe tests (the pilot samples by them)."""

    __tablename__ = "probes"
    __table_args__ = (UniqueConstraint("snapshot_id", "generator", "question_hash"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(primary_key=True)
    kb_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    snapshot_id: Mapped[int] = mapped_column(ForeignKey("snapshots.id", ondelete="CASCADE"), index=True)
    generator: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))  # built in: verbatim, rephrase, reversal, syllogism, multi-hop,
    # holdout; an imported benchmark's own kinds (deduction, membership, ...) are kept as they are
    question: Mapped[str] = mapped_column(Text)
    question_hash: Mapped[str] = mapped_column(String(64))  # of the question and its choices
    choices: Mapped[list[str]] = mapped_column(default=list)
    answer_index: Mapped[int] = mapped_column(Integer)
    chat_question: Mapped[str | None] = mapped_column(Text, default=None)
    answers: Mapped[list[str]] = mapped_column(default=list)
    source_ids: Mapped[list[str]] = mapped_column(default=list)
    provenance: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProbeUnit(Base):
    """A document a probe generator already processed at a given content, so a rerun skips it even when
    it yielded no probe."""

    __tablename__ = "probe_units"

    kb_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), primary_key=True)
    generator: Mapped[str] = mapped_column(String(64), primary_key=True)
    document_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    probes: Mapped[int] = mapped_column(Integer, default=0)
    done_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProbeAnswer(Base):
    """A served answer to an answer probe's chat question, with the judge's verdict on it.

    ``mode`` is the mode that answered (icl, ft, aug-ft), ``adapter_id`` its adapter (None for icl), ``served_as``
    how the prompt was built (icl-whole-kb, icl-retrieval, adapter:<mode>); answers of one evaluation share a
    ``run_id``."""

    __tablename__ = "probe_answers"
    __table_args__ = (Index("ix_probe_answers_kb_run", "kb_id", "run_id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(primary_key=True)
    kb_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"))
    snapshot_id: Mapped[int] = mapped_column(ForeignKey("snapshots.id", ondelete="CASCADE"), index=True)
    probe_id: Mapped[int] = mapped_column(ForeignKey("probes.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(16))
    adapter_id: Mapped[str | None] = mapped_column(String(32), default=None)
    served_as: Mapped[str] = mapped_column(String(32))
    answer: Mapped[str] = mapped_column(Text)
    correct: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text, default="")
    f1: Mapped[float] = mapped_column(Float, default=0.0)
    judge: Mapped[str] = mapped_column(String(64))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Evaluation(Base):
    """Accuracy of one mode on a snapshot's probes (per probe kind, with 95% intervals), and its costs."""

    __tablename__ = "evaluations"
    __table_args__ = {"sqlite_autoincrement": True}  # ids are never reused

    id: Mapped[int] = mapped_column(primary_key=True)
    kb_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("snapshots.id", ondelete="SET NULL"), default=None)
    mode: Mapped[str] = mapped_column(String(16))  # floor | icl | ft | aug-ft
    scope: Mapped[str] = mapped_column(String(16), default="pilot")  # pilot (a sample) | full
    adapter_id: Mapped[str | None] = mapped_column(String(32), default=None)
    by_kind: Mapped[dict[str, Any]] = mapped_column(default=dict)  # kind -> {correct, n, accuracy, low, high, chance}
    stats: Mapped[dict[str, Any]] = mapped_column(default=dict)  # prompt tokens per query, seconds, tokens, ...
    job_id: Mapped[str | None] = mapped_column(String(32), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Decision(Base):
    """A policy's choice of mode for a KB, with the estimates it weighed and why."""

    __tablename__ = "decisions"
    __table_args__ = {"sqlite_autoincrement": True}  # ids are never reused

    id: Mapped[int] = mapped_column(primary_key=True)
    kb_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("snapshots.id", ondelete="SET NULL"), default=None)
    policy: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))
    workload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    estimates: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the report data: accuracy, costs, pilot
    break_even: Mapped[dict[str, Any]] = mapped_column(default=dict)  # "icl->ft" -> queries (None: never)
    rationale: Mapped[str] = mapped_column(Text, default="")
    job_id: Mapped[str | None] = mapped_column(String(32), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    """One admin or editor action (API, console or CLI), or a client blocked for failed sign-ins.

    Append-only, and kept when the KB it names is deleted (``kb`` is the slug, not a foreign key).
    Never holds a secret: no keys, no request bodies, no source configs.
    """

    __tablename__ = "audit_events"
    __table_args__ = {"sqlite_autoincrement": True}  # ids are never reused

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200), index=True)  # "key:<id>", "cli:<os user>", "anonymous"
    actor_name: Mapped[str] = mapped_column(String(200), default="")  # the key's name
    via: Mapped[str] = mapped_column(String(16))  # api | console | cli
    client: Mapped[str] = mapped_column(String(64), default="")  # client address; "local" for the CLI
    action: Mapped[str] = mapped_column(String(64), index=True)  # e.g. kb.create, source.add, auth.blocked
    kb: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    target: Mapped[str] = mapped_column(String(300), default="")  # e.g. "source 4", "job 9f3c...", "key 7"
    outcome: Mapped[str] = mapped_column(String(16))  # ok | denied | failed
    status: Mapped[int | None] = mapped_column(Integer, default=None)  # HTTP status (API, console)
    detail: Mapped[str] = mapped_column(String(500), default="")  # the error message, or non-secret parameters


class CatalogLock(Base):
    """A named lease every process sharing the catalog respects (e.g. one sync of a KB at a time).

    A holder renews ``expires_at`` while it works; a lease past it is free (its holder died)."""

    __tablename__ = "catalog_locks"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)  # e.g. "kb:12:sync"
    owner: Mapped[str] = mapped_column(String(64))
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class Conversation(Base):
    """One user's chat with a KB in the console: its turns as they were answered (the question, the answer, its
    sources and citations, and which mode, adapter and model answered), kept for that user alone."""

    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200), index=True)  # "key:<id>": the console session's key
    kb_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200), default="")  # the first question, cut short
    turns: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class RevokedSession(Base):
    """A console session signed out before it expired: its cookie is refused until then."""

    __tablename__ = "revoked_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)
