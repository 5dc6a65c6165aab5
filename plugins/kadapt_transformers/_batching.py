"""The state of a batch under way and what moves it: requests, the rows' key/value caches (cut, merged,
left-padded), the prefix store kept across requests, and the compute lock the decoding worker shares."""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kadapt.models.base import Completion, GenerationParams


@dataclass(eq=False)
class _Request:
    prompt: str
    params: GenerationParams
    contrast: str | None = None  # the prompt of context-aware decoding's second row (GenerationParams)
    # the tokens of the conversation before its last message, in prompt / contrast (empty: none)
    head: list[int] = field(default_factory=list)
    contrast_head: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    limit: int = 0  # the most new tokens: max_tokens, or less where the context window ends first
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0
    done: bool = False
    finish_reason: str = "length"
    cancelled: bool = False
    loop: asyncio.AbstractEventLoop | None = None
    queue: asyncio.Queue | None = None
    finished: threading.Event = field(default_factory=threading.Event)
    completion: Completion | None = None
    error: BaseException | None = None
    generator: Any = None  # a seeded request's own torch.Generator (seeded by its seed and prompt tokens)

    def send(self, item: tuple[str, Any]) -> None:
        if self.loop is not None and self.queue is not None:
            try:
                self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
            except RuntimeError:  # the client's event loop is gone
                self.cancelled = True


@dataclass(eq=False)
class _Running:
    """A batch being decoded. Its rows: the requests' own, in order, then a contrast row for each request in
    ``contrasted`` (context-aware decoding), in that order. Every row has its key/value cache (left-padded to a
    common width; ``mask`` says which columns are real), its last position, and the logits of its next token."""

    requests: list[_Request]
    contrasted: list[int]  # the requests (indexes in requests) with a contrast row, in the order of those rows
    cache: Any
    mask: Any
    last: Any
    logits: Any
    eos: set[int]
    tokens: Any = None  # every row's chosen token, for the next step

    @property
    def params(self) -> GenerationParams:
        return self.requests[0].params

    @property
    def generators(self) -> list[Any] | None:
        """Each own row's generator when the batch samples with seeds (None: unseeded, torch's default one)."""
        found = [request.generator for request in self.requests]
        return found if any(generator is not None for generator in found) else None


class _ComputeLock:
    """The re-entrant lock over a model's compute (generation, scoring and adapter loading never overlap on the
    cores), which the decoding worker gives, between two steps, to any thread waiting for it."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._waiting = 0
        self._count = threading.Lock()

    def __enter__(self) -> _ComputeLock:
        with self._count:
            self._waiting += 1
        try:
            self._lock.acquire()
        finally:
            with self._count:
                self._waiting -= 1
        return self

    def __exit__(self, *exc_info) -> None:
        self._lock.release()

    def yield_to_waiters(self, patience: float = 10.0) -> None:
        """Wait (not holding the lock) until the threads waiting for it have taken it, ``patience`` seconds at
        most."""
        import time

        deadline = time.monotonic() + patience
        while self._waiting and time.monotonic() < deadline:
            time.sleep(0.0005)


class _PrefixStore:
    """Key/value caches of prompt prefixes (a conversation before its last message: the system prompt and the
    KB's documents in it), kept across requests per model and adapter; the least recently used go past a byte
    budget. Used by the worker thread only."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.size = 0
        self.entries: OrderedDict[tuple[Any, tuple[int, ...]], list[tuple[Any, Any]]] = OrderedDict()

    def longest(self, owner: Any, ids: Sequence[int]) -> int:
        """The length of the longest stored prefix of ``ids`` (shorter than ids), 0 when none."""
        best = 0
        for stored_owner, tokens in self.entries:
            size = len(tokens)
            if stored_owner == owner and best < size < len(ids) and tuple(ids[:size]) == tokens:
                best = size
        return best

    def get(self, owner: Any, tokens: tuple[int, ...]) -> list[tuple[Any, Any]] | None:
        layers = self.entries.get((owner, tokens))
        if layers is not None:
            self.entries.move_to_end((owner, tokens))
        return layers

    def put(self, owner: Any, tokens: tuple[int, ...], layers: list[tuple[Any, Any]]) -> None:
        size = sum(keys.nbytes + values.nbytes for keys, values in layers)
        if size > self.budget or (owner, tokens) in self.entries:
            return
        self.entries[(owner, tokens)] = layers
        self.size += size
        while self.size > self.budget:
            _, dropped = self.entries.popitem(last=False)
            self.size -= sum(keys.nbytes + values.nbytes for keys, values in dropped)


# -- continuous batching helpers -------------------------------------------------------------------------


def _without_ended(running: _Running, tokens) -> _Running | None:
    """``running`` without the rows of requests that ended (or whose client left), with the chosen ``tokens`` of
    the rows that go on; None when none does. Leading columns no remaining row uses are cut."""
    import torch

    requests = running.requests
    live = [index for index, request in enumerate(requests) if not (request.done or request.cancelled)]
    if not live:
        return None
    if len(live) == len(requests):
        running.tokens = tokens
        return running
    kept = set(live)
    contrast_kept = [row for row, owner in enumerate(running.contrasted) if owner in kept]
    index = torch.tensor(live + [len(requests) + row for row in contrast_kept], device=tokens.device)
    renumbered = {old: new for new, old in enumerate(live)}
    mask = running.mask[index]
    start = int(mask.any(dim=0).long().argmax())  # the first column a remaining row uses
    layers = [(keys[index, :, start:], values[index, :, start:]) for keys, values in _cache_tensors(running.cache)]
    return _Running(
        [requests[row] for row in live],
        [renumbered[running.contrasted[row]] for row in contrast_kept],
        _new_cache(layers),
        mask[:, start:],
        running.last[index],
        running.logits[index],
        running.eos,
        tokens[index],
    )


def _merge(first: _Running, second: _Running) -> _Running:
    """One batch of two at the same step: the rows of both, own rows first then contrast rows, their caches
    left-padded (masked) to one width."""
    import torch

    width = max(first.mask.shape[1], second.mask.shape[1])
    own_first, own_second = len(first.requests), len(second.requests)
    rows_first, rows_second = first.mask.shape[0], second.mask.shape[0]
    order = [
        *range(own_first),
        *range(rows_first, rows_first + own_second),
        *range(own_first, rows_first),
        *range(rows_first + own_second, rows_first + rows_second),
    ]
    index = torch.tensor(order, device=first.mask.device)

    def joined(one, other, dim: int):
        return torch.cat([_left_pad(one, width, dim), _left_pad(other, width, dim)])[index]

    layers = [
        (joined(first_keys, second_keys, 2), joined(first_values, second_values, 2))
        for (first_keys, first_values), (second_keys, second_values) in zip(
            _cache_tensors(first.cache), _cache_tensors(second.cache), strict=True
        )
    ]
    return _Running(
        first.requests + second.requests,
        first.contrasted + [own_first + owner for owner in second.contrasted],
        _new_cache(layers),
        joined(first.mask, second.mask, 1),
        torch.cat([first.last, second.last])[index],
        torch.cat([first.logits, second.logits])[index],
        first.eos,
    )


def _left_pad(tensor, width: int, dim: int):
    """``tensor`` with zeros before it along ``dim``, to ``width``."""
    import torch

    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


# -- key/value caches ---------------------------------------------------------------------------------------


@functools.cache
def _cache_keyword() -> str:
    """The name of the KV-cache argument: ``cache`` in newer transformers, ``past_key_values`` before."""
    from transformers import LlamaModel

    return "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


def _cache_arg(cache) -> dict[str, Any]:
    return {_cache_keyword(): cache} if cache is not None else {}


def _cache_of(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _cache_tensors(cache) -> list[tuple[Any, Any]]:
    """Each layer's (keys, values) of a dynamic cache, [batch, heads, tokens, head dim]."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))  # transformers 4


def _new_cache(layers: list[tuple[Any, Any]]):
    """A dynamic cache holding these layers' (keys, values)."""
    from transformers import DynamicCache

    return DynamicCache(layers)
