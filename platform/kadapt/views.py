"""What kadapt shows of its objects: one pydantic model per object, used by the API's responses (so the OpenAPI
schema states their real shapes), the CLI's ``--json`` output, the web console and the report.

Each view is built from a catalog row with ``View.of(row)`` and turned into JSON with ``view.json_data()``. Times
are ISO 8601 as the row holds them (UTC; a time read back from SQLite carries no zone).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from kadapt.catalog.models import Adapter, AuditEvent, Decision, Job, KnowledgeBase, Probe, utc
from kadapt.modes import trained_mode

__all__ = [
    "AdapterView",
    "AuditEventView",
    "AuditPage",
    "DecisionView",
    "JobProgress",
    "JobView",
    "KBModeView",
    "KBView",
    "KBWithDecision",
    "KBWithStatus",
    "ProbeView",
    "SourceView",
    "View",
]

Time = Annotated[datetime, PlainSerializer(lambda value: value.isoformat(), return_type=str, when_used="json")]


class View(BaseModel):
    """A read-only picture of a catalog row."""

    model_config = ConfigDict(frozen=True)

    @classmethod
    def of(cls, row: Any, **extra: Any):
        """The view of ``row`` (a catalog object); ``extra`` gives fields the row does not hold."""
        return cls(**_fields(cls, row) | extra)

    def json_data(self) -> dict[str, Any]:
        """The view as JSON's types (what the API answers and ``--json`` prints)."""
        return self.model_dump(mode="json")


def _fields(cls: type[View], row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in cls.model_fields if hasattr(row, name)}


class KBView(View):
    """A knowledge base: how it is served, who may read and manage it, its workload."""

    slug: str
    title: str
    base_model: str = Field(description="The model it adapts and serves.")
    policy: str = Field(description="The policy that picks its mode.")
    active_mode: str = Field(description="How it is served: icl, ft, aug-ft or aug-ft+rag.")
    active_adapter: str | None = Field(description="The adapter it is served from (fine-tuned modes).")
    icl_contrast: float = Field(
        description="Context-aware decoding weight of icl answers (0: plain), set by the pilot."
    )
    reader_groups: list[str]
    owner_groups: list[str]
    workload: dict[str, Any] = Field(description="Queries per day, horizon, accuracy floor, budget, ...")
    created_at: Time


class KBWithStatus(KBView):
    status: dict[str, Any] = Field(
        description="Documents, chunks, snapshot, last sync; document and source errors to managers only."
    )


class SourceView(View):
    """A document source of a KB (its config can name private hosts or folders: shown to managers only)."""

    id: int
    kb_id: int
    kind: str = Field(description="The connector, e.g. files, git, web, jsonl.")
    config: dict[str, Any]
    schedule: str | None = Field(description="Cron expression of the source's scheduled syncs, or null.")
    next_sync_at: Time | None = Field(description="When the scheduler syncs it next (null without a schedule).")
    last_sync_at: Time | None


class ProbeView(View):
    """A held-out generalization probe: its multiple-choice form and its chat form."""

    id: int
    kind: str = Field(description="verbatim, rephrase, reversal, syllogism, multi-hop, ...")
    generator: str
    question: str
    choices: list[str]
    answer_index: int
    chat_question: str | None
    answers: list[str] = Field(description="Accepted free-form answers of the chat form.")
    source_ids: list[str]

    @classmethod
    def of(cls, row: Probe, **extra: Any) -> ProbeView:
        return cls(**_fields(cls, row) | {"answers": row.answers or []} | extra)


class AdapterView(View):
    """A LoRA adapter trained on a KB; ``active`` when the KB is served from it."""

    id: str
    mode: str = Field(description="ft or aug-ft.")
    state: str = Field(description="training, ready or failed.")
    snapshot_id: int | None
    parent_id: str | None = Field(description="The adapter a warm start continued; null for a full training.")
    warm_starts: int = Field(description="Warm starts since the last full training (0: a full training).")
    base_model: str
    path: str
    active: bool
    stats: dict[str, Any] = Field(description="Training statistics: examples, steps, losses, seconds.")
    created_at: Time

    @classmethod
    def of(cls, row: Adapter, kb: KnowledgeBase | None = None, **extra: Any) -> AdapterView:  # type: ignore[override]
        active = kb is not None and kb.active_adapter == row.id and trained_mode(kb.active_mode) == row.mode
        return cls(**_fields(cls, row) | {"active": active} | extra)


class KBModeView(View):
    slug: str
    active_mode: str
    active_adapter: str | None


class JobProgress(BaseModel):
    done: int
    total: int | None


class JobView(View):
    """A background job (sync, augment, train, adapt, ...) with its progress."""

    id: str
    kind: str
    kb_id: int | None
    state: str = Field(description="queued, running, succeeded, failed or cancelled.")
    runner: str
    params: dict[str, Any]
    result: dict[str, Any] | None
    progress: JobProgress
    message: str
    error: str | None
    attempts: int
    created_at: Time
    started_at: Time | None
    finished_at: Time | None
    log: str | None = Field(default=None, description="The job's log: to those who manage its KB, on one job.")

    @classmethod
    def of(cls, row: Job, **extra: Any) -> JobView:
        progress = JobProgress(done=row.progress_done, total=row.progress_total)
        return cls(**_fields(cls, row) | {"progress": progress, "log": None} | extra)


class DecisionView(View):
    """A policy's decision: the mode it chose for a KB, why, and from which query volume it pays."""

    id: int
    policy: str
    mode: str
    snapshot_id: int | None
    workload: dict[str, Any]
    break_even: dict[str, float | None] = Field(
        description="Queries after which one mode costs less than another ('icl->ft'); null: never."
    )
    break_even_queries: float | None = Field(description="The break-even volume of the chosen mode.")
    rationale: str
    created_at: Time | None

    @classmethod
    def of(cls, row: Decision, **extra: Any) -> DecisionView:
        chosen = next((value for key, value in row.break_even.items() if key.endswith("->" + row.mode)), None)
        return cls(**_fields(cls, row) | {"break_even_queries": chosen} | extra)


class KBWithDecision(KBView):
    decision: DecisionView | None


class AuditEventView(View):
    """One recorded action: who did what, through which surface, with what outcome."""

    id: int
    at: Time = Field(description="When (UTC).")
    actor: str = Field(description="'key:<id>', 'cli:<os user>', 'console:<key id>', ...")
    actor_name: str
    via: str = Field(description="api, console or cli.")
    client: str
    action: str = Field(description="e.g. kb.create, source.add, auth.blocked.")
    kb: str | None
    target: str
    outcome: str = Field(description="ok, denied or failed.")
    status: int | None = Field(description="The HTTP status (API, console).")
    detail: str

    @classmethod
    def of(cls, row: AuditEvent, **extra: Any) -> AuditEventView:
        return cls(**_fields(cls, row) | {"at": utc(row.at)} | extra)


class AuditPage(View):
    object: Literal["list"] = "list"
    data: list[AuditEventView]
    has_more: bool
    next_before: int | None = Field(description="Pass as ``before`` for the next page.")
