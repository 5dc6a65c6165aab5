"""Console chat history: each user's conversations with a KB, as they were answered, kept for that user alone.

A conversation belongs to an ``owner`` (``key:<id>``, the key a console session speaks for) and one KB; nobody
else lists, reads or deletes it, and it goes with its KB. Each turn holds the question, the answer, its sources
and citations, and which mode, adapter and model answered. A user keeps at most :data:`MAX_CONVERSATIONS`
(oldest dropped first), and a conversation its last :data:`MAX_TURNS` turns.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, func, select

from kadapt.catalog import Catalog, Conversation, KnowledgeBase
from kadapt.catalog.models import utc, utcnow
from kadapt.errors import NotFound

__all__ = [
    "MAX_CONVERSATIONS",
    "MAX_TURNS",
    "delete_conversation",
    "get_conversation",
    "list_conversations",
    "most_read_kb",
    "record_turn",
]

MAX_CONVERSATIONS = 100
MAX_TURNS = 50
TITLE_CHARS = 80


def _title(question: str) -> str:
    text = " ".join(question.split())
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1] + "…"


def _owned(session, owner: str, conversation_id: str) -> Conversation:
    row = session.get(Conversation, conversation_id)
    if row is None or row.owner != owner:  # another user's conversation is one that does not exist
        raise NotFound(f"no conversation {conversation_id!r}")
    return row


def record_turn(
    catalog: Catalog,
    owner: str,
    kb: KnowledgeBase,
    conversation_id: str | None,
    turn: dict[str, Any],
    *,
    replace_last: bool = False,
) -> str:
    """Add ``turn`` to the owner's conversation (a new one when ``conversation_id`` is None, or names none of the
    owner's conversations with this KB); ``replace_last`` puts it in place of the last turn (an answer asked
    again). Returns the conversation's id."""
    with catalog.session() as session:
        row = session.get(Conversation, conversation_id) if conversation_id else None
        if row is None or row.owner != owner or row.kb_id != kb.id:
            row = Conversation(id=uuid.uuid4().hex, owner=owner, kb_id=kb.id, title=_title(turn["question"]), turns=[])
            session.add(row)
        turns = list(row.turns or [])
        if replace_last and turns:
            turns.pop()
        row.turns = (turns + [turn])[-MAX_TURNS:]
        row.updated_at = utcnow()
        session.flush()
        _prune(session, owner)
        return row.id


def _prune(session, owner: str) -> None:
    count = session.scalar(select(func.count()).select_from(Conversation).where(Conversation.owner == owner))
    if count > MAX_CONVERSATIONS:
        oldest = select(Conversation.id).where(Conversation.owner == owner).order_by(Conversation.updated_at)
        doomed = list(session.scalars(oldest.limit(count - MAX_CONVERSATIONS)))
        session.execute(delete(Conversation).where(Conversation.id.in_(doomed)))


def list_conversations(catalog: Catalog, owner: str, kb: KnowledgeBase, limit: int = 30) -> list[dict[str, Any]]:
    """The owner's conversations with ``kb``, newest first: id, title, turns, updated_at."""
    query = (
        select(Conversation)
        .where(Conversation.owner == owner, Conversation.kb_id == kb.id)
        .order_by(Conversation.updated_at.desc())
        .limit(limit)
    )
    with catalog.session() as session:
        return [
            {"id": row.id, "title": row.title, "turns": len(row.turns or []), "updated_at": utc(row.updated_at)}
            for row in session.scalars(query)
        ]


def get_conversation(catalog: Catalog, owner: str, conversation_id: str) -> tuple[int, list[dict[str, Any]]]:
    """The KB id and the turns of one of the owner's conversations; NotFound for anyone else's."""
    with catalog.session() as session:
        row = _owned(session, owner, conversation_id)
        return row.kb_id, list(row.turns or [])


def delete_conversation(catalog: Catalog, owner: str, conversation_id: str) -> None:
    with catalog.session() as session:
        session.delete(_owned(session, owner, conversation_id))


def most_read_kb(catalog: Catalog, owner: str, kb_ids: set[int]) -> int | None:
    """Of ``kb_ids`` (those the owner may read), the one the owner asked most often lately (the turns of their 20
    newest conversations; on a tie, the one asked last), or None."""
    query = (
        select(Conversation.kb_id, Conversation.turns, Conversation.updated_at)
        .where(Conversation.owner == owner)
        .order_by(Conversation.updated_at.desc())
        .limit(20)
    )
    scores: dict[int, tuple[int, Any]] = {}
    with catalog.session() as session:
        for kb_id, turns, updated_at in session.execute(query):
            if kb_id in kb_ids:
                count, last = scores.get(kb_id, (0, utc(updated_at)))
                scores[kb_id] = (count + len(turns or []), max(last, utc(updated_at)))
    return max(scores, key=scores.get) if scores else None
