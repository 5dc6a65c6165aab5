"""The bound on chats a server process takes at once: ``KADAPT_MAX_CHAT_QUEUE`` in all, answered or waiting for
the model's batch, and optionally ``KADAPT_MAX_CHAT_PER_KEY`` per API key. One more gets
:class:`ChatQueueFull` (HTTP 429 with Retry-After) at once, before any work is done for it, instead of
waiting behind an unbounded queue.

A chat holds its :class:`ChatTicket` from admission until its answer is sent, streamed or not; a ticket is
released once, explicitly or when it is garbage collected (a streamed response that never started).
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import Counter

from kadapt.errors import ChatQueueFull
from kadapt.settings import Settings

__all__ = ["ChatQueue", "ChatTicket", "principal_key"]

RETRY_AFTER_SECONDS = 5  # a few answers' time on the default model


class ChatTicket:
    """A chat's place in the queue; :meth:`release` frees it (idempotent)."""

    def __init__(self, queue: ChatQueue, key: str) -> None:
        self._finalizer = weakref.finalize(self, queue._release, key)

    def release(self) -> None:
        self._finalizer()


class ChatQueue:
    """Counts the chats this process holds, in all and per key, under a lock (routes run on many threads)."""

    def __init__(self, depth: int, per_key: int = 0) -> None:
        self.depth = depth
        self.per_key = per_key
        self._lock = threading.Lock()
        self._total = 0
        self._by_key: Counter[str] = Counter()

    @classmethod
    def from_settings(cls, settings: Settings) -> ChatQueue:
        return cls(settings.max_chat_queue, settings.max_chat_per_key)

    @property
    def held(self) -> int:
        return self._total

    def admit(self, key: str) -> ChatTicket:
        """A ticket for one chat by ``key`` (an API key's id, or a principal's name), or ChatQueueFull."""
        with self._lock:
            if self._total >= self.depth:
                raise ChatQueueFull(
                    f"the server is answering {self._total} chats, its limit (KADAPT_MAX_CHAT_QUEUE); "
                    f"retry in {RETRY_AFTER_SECONDS} seconds",
                    retry_after=RETRY_AFTER_SECONDS,
                )
            if self.per_key and self._by_key[key] >= self.per_key:
                raise ChatQueueFull(
                    f"this key has {self._by_key[key]} chats in progress, the limit per key "
                    f"(KADAPT_MAX_CHAT_PER_KEY); wait for an answer before asking again",
                    retry_after=RETRY_AFTER_SECONDS,
                )
            self._total += 1
            self._by_key[key] += 1
        return ChatTicket(self, key)

    def _release(self, key: str) -> None:
        with self._lock:
            self._total -= 1
            self._by_key[key] -= 1
            if self._by_key[key] <= 0:
                del self._by_key[key]


def principal_key(principal) -> str:
    """What ``KADAPT_MAX_CHAT_PER_KEY`` counts by, and whose console conversations are whose: the principal's API
    key (a console session speaks for one), or the company account a user signed in with."""
    if principal.key_id is not None:
        return f"key:{principal.key_id}"
    if principal.subject:
        return "user:" + hashlib.sha256(principal.subject.encode()).hexdigest()[:32]
    return f"name:{principal.name}"
