"""One loaded transformers model shared by a process: a worker thread batches concurrent requests.

Requests wait in a queue; the worker takes up to ``max_batch_size`` requests with the same sampling settings and
decodes them together, one token per step for every row. Each row ends on its own (end of sequence, its own
max_tokens, a stop string, a loop, or a client that went away) and leaves the batch at once; a request that
arrives meanwhile with the same settings joins the batch at the next step (continuous batching) instead of
waiting for the whole batch to end. The key/value cache of each prompt's conversation before its last message
(the system prompt and the KB's documents in it) is kept across requests, so the next question over the same
documents computes only its own tokens. So N clients share one model and one set of compute threads.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import os
import threading
import warnings
from collections.abc import AsyncIterator, Sequence

from kadapt.models.base import MODEL_LOAD_LOCK, ChatMessage, Completion, GenerationParams
from kadapt.models.precision import cpu_bf16, cuda_dtype
from kadapt_transformers._batching import (
    _cache_arg,
    _cache_of,
    _cache_tensors,
    _ComputeLock,
    _merge,
    _new_cache,
    _PrefixStore,
    _Request,
    _Running,
    _without_ended,
)
from kadapt_transformers._scoring import (
    ScoreTree,
    causal_lm_of,
    collate_trees,
    forward_groups,
    pack_trees,
    target_log_probs,
)

__all__ = ["FORWARD_TOKENS_CPU", "FORWARD_TOKENS_GPU", "TransformersModel", "looping", "text_before_stop"]

# peft calls a transformers property deprecated in v5 whenever an adapter is attached; it is harmless
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def text_before_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the first of ``stops`` in it, and whether one was found. A stop counts once the answer has
    begun (after its leading whitespace): an answer that opens with a newline is not cut to nothing."""
    begun = len(text) - len(text.lstrip())
    found = (text.find(stop, begun) for stop in stops if stop)
    stop_at = min((at for at in found if at >= 0), default=-1)
    return (text[:stop_at], True) if stop_at >= 0 else (text, False)


LOOP_REPEATS = 3  # a stretch said this often in a row, at the least, is a loop
LOOP_MAX_PERIOD = 64  # longest stretch (tokens) looked for


def looping(token_ids: Sequence[int], span: int) -> bool:
    """Whether ``token_ids`` end in one stretch of tokens repeated back to back (at least LOOP_REPEATS times, and
    over at least ``span`` tokens): "The answer is: The answer is: The answer is: ...". A small model greedily
    decoding falls into such loops and would run on to max_tokens, adding nothing."""
    count = len(token_ids)
    for period in range(1, min(LOOP_MAX_PERIOD, count // LOOP_REPEATS) + 1):
        if token_ids[-1] != token_ids[-1 - period]:  # the cheap test first: this runs after every token
            continue
        length = max(period * LOOP_REPEATS, -(-span // period) * period)
        if length > count:
            continue
        if token_ids[count - length + period :] == token_ids[count - length : count - period]:
            return True
    return False


class TransformersModel:
    """A causal LM with a chat template, loaded once; thread-safe; batched generation."""

    instances = 0  # how many were ever created in this process (the server must hold one per model)

    def __init__(
        self,
        path: str,
        model_id: str,
        *,
        max_batch_size: int = 16,
        threads: int | None = None,
        precision: str = "auto",
        loop_stop_tokens: int = 24,
        continuous: bool = True,
        prefix_cache_mb: int = 256,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()
        if threads:
            torch.set_num_threads(threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = cuda_dtype(precision) if self.device == "cuda" else torch.float32
        # float32 weights on the CPU, matrix products in bf16 where it has them (kadapt.models.precision)
        self.autocast = self.device == "cpu" and cpu_bf16(precision)
        with MODEL_LOAD_LOCK:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(self.device).eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model_id = model_id
        self.path = path
        self.context_window = int(getattr(self.model.config, "max_position_embeddings", 2048))
        self.max_batch_size = max_batch_size
        self.loop_stop_tokens = loop_stop_tokens
        self.continuous = continuous  # requests join a batch under way (else each batch runs to its end)
        self._prefixes = _PrefixStore(prefix_cache_mb * 2**20)
        self.compute_lock = _ComputeLock()
        self.peft = None  # a PeftModel over self.model once the first adapter is loaded
        self.adapters: dict[
            str, str
        ] = {}  # adapter id -> folder  # generation, scoring and training never overlap on the cores
        self._pending: list[_Request] = []
        self._condition = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._work, name=f"kadapt-generate-{model_id}", daemon=True)
        self._worker.start()
        atexit.register(self.close)  # let the worker leave torch cleanly before the interpreter goes
        TransformersModel.instances += 1

    # -- prompts -------------------------------------------------------------------------------------

    def format(self, messages: Sequence[ChatMessage]) -> str:
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return len(self.tokenizer(self.format(messages), add_special_tokens=False).input_ids)

    def _head(self, messages: Sequence[ChatMessage], prompt: str) -> list[int]:
        """The tokens of the conversation before its last message, the part of ``prompt`` (``messages``
        formatted) the next question over the same system prompt and documents shares; none when it is short
        or the template does not write it as a prefix (the worker checks the tokens too)."""
        if len(messages) < 2 or not self._prefixes.budget:
            return []
        head = self.tokenizer.apply_chat_template(list(messages[:-1]), tokenize=False, add_generation_prompt=False)
        if not head or not prompt.startswith(head) or len(head) >= len(prompt):
            return []
        return self.tokenizer(head, add_special_tokens=False).input_ids

    # -- public generation API -----------------------------------------------------------------------

    def _submit(self, messages: Sequence[ChatMessage], params: GenerationParams, *, asynchronous: bool) -> _Request:
        request = _Request(prompt=self.format(messages), params=params)
        request.head = self._head(messages, request.prompt)
        if params.contrast_weight > 0 and params.contrast_messages:
            request.contrast = self.format(params.contrast_messages)
            request.contrast_head = self._head(params.contrast_messages, request.contrast)
        if asynchronous:
            request.loop = asyncio.get_running_loop()
            request.queue = asyncio.Queue()
        with self._condition:
            if self._closed:
                raise RuntimeError("the model was closed")
            self._pending.append(request)
            self._condition.notify()
        return request

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[str | Completion]:
        request = self._submit(messages, params, asynchronous=True)
        assert request.queue is not None
        try:
            while True:
                kind, value = await request.queue.get()
                if kind == "error":
                    raise value
                yield value
                if kind == "done":
                    return
        finally:
            request.cancelled = True  # a client that disconnects frees its row in the batch

    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Completion:
        """The whole answer: :meth:`stream`'s last item."""
        async with contextlib.aclosing(self.stream(messages, params)) as items:
            async for item in items:
                if isinstance(item, Completion):
                    return item
        raise RuntimeError("the engine ended a request without its completion")

    def generate_batch(
        self, conversations: Sequence[Sequence[ChatMessage]], params: GenerationParams
    ) -> list[Completion]:
        requests = [self._submit(messages, params, asynchronous=False) for messages in conversations]
        for request in requests:
            request.finished.wait()
            if request.error is not None:
                raise request.error
        return [request.completion for request in requests]  # type: ignore[misc]

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        if self._worker.is_alive() and self._worker is not threading.current_thread():
            self._worker.join(timeout=30)

    # -- adapters ------------------------------------------------------------------------------------

    def ensure_adapter(self, adapter_id: str, path: str) -> None:
        """Load a PEFT adapter next to the others on this base model (once; later requests reuse it)."""
        if self.adapters.get(adapter_id) == path:
            return
        from peft import PeftModel

        with self.compute_lock, MODEL_LOAD_LOCK:
            if self.adapters.get(adapter_id) == path:
                return
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.model, path, adapter_name=adapter_id, is_trainable=False)
            else:
                self.peft.load_adapter(path, adapter_name=adapter_id, is_trainable=False)
            self.peft.eval()
            self.adapters[adapter_id] = path

    @contextlib.contextmanager
    def _network(self, adapter_id: str | None):
        """The module to run, in inference mode and this model's precision: the base model alone, or with one
        adapter active (hold compute_lock)."""
        import torch

        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            if self.peft is None:
                yield self.model
            elif adapter_id is None:
                with self.peft.disable_adapter():
                    yield self.peft
            else:
                self.peft.set_adapter(adapter_id)
                yield self.peft

    # -- worker --------------------------------------------------------------------------------------

    def _next_batch(self) -> list[_Request] | None:
        with self._condition:
            while not self._pending and not self._closed:
                self._condition.wait()
            if self._closed:
                return None
            key = self._pending[0].params.sampling_key
            batch = [request for request in self._pending if request.params.sampling_key == key]
            batch = [request for request in batch if not request.cancelled][: self.max_batch_size]
            self._pending = [request for request in self._pending if request not in batch and not request.cancelled]
            return batch

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if not batch:
                continue
            try:
                self._run_batch(batch)
            except BaseException as exc:  # delivered to every waiting request; the worker goes on
                for request in batch:
                    if not request.done:
                        request.error = exc
                        request.send(("error", exc))
                        request.finished.set()

    def _run_batch(self, batch: list[_Request]) -> None:
        """Decode a batch step by step. Prompts that share a prefix (a system prompt, the KB's documents) compute
        it once, or not at all where an earlier request left its key/value cache (:class:`_PrefixStore`): it is
        copied to every row, and each row's own suffix follows, left-padded, with explicit positions. A request
        with a contrast prompt (context-aware decoding) takes a second row that follows the tokens chosen for the
        first. A row leaves the batch as soon as it ends; requests that arrive with the same settings join it
        between steps (``batch`` grows by them, so an error reaches them too)."""
        params = batch[0].params
        if params.adapter_id is not None:
            self.ensure_adapter(params.adapter_id, params.adapter_path or "")
        with self.compute_lock, self._network(params.adapter_id) as network:
            running = self._prefill(network, batch)
        while running is not None:
            # the lock is taken per step, and given first to any thread waiting for it (scoring, routing), so a
            # batch that keeps taking requests never shuts them out
            self.compute_lock.yield_to_waiters()
            with self.compute_lock, self._network(params.adapter_id) as network:
                tokens = self._next_tokens(running)
                running = _without_ended(running, tokens)
                if running is None:
                    break
                self._step(network, running)
                joining = self._joining(running)
                if joining:
                    batch.extend(joining)
                    joined = self._prefill(network, joining)
                    running = _merge(running, joined) if joined is not None else running
        for request in batch:
            if not request.done:
                self._finish(request, "length")

    def _joining(self, running: _Running) -> list[_Request]:
        """Waiting requests that may join ``running`` now: with its sampling settings and adapter, while the batch
        has room, and never past an older request that waits for another batch."""
        if not self.continuous:
            return []
        room = self.max_batch_size - len(running.requests)
        params = running.params
        joining: list[_Request] = []
        with self._condition:
            for request in self._pending:
                if len(joining) >= room:
                    break
                if request.cancelled:
                    continue
                if (
                    request.params.sampling_key != params.sampling_key
                    or request.params.adapter_path != params.adapter_path
                ):
                    break
                joining.append(request)
            if joining:
                self._pending = [r for r in self._pending if r not in joining and not r.cancelled]
        return joining

    def _prefill(self, network, requests: list[_Request]) -> _Running | None:
        """Run the requests' prompts (and contrast prompts): their decoding state, with the logits of each row's
        first new token. A prompt that fills the context window fails its own request alone."""
        import torch

        tokenizer = self.tokenizer
        ready, rows = [], []
        for request in requests:
            ids = tokenizer(request.prompt, add_special_tokens=False).input_ids
            request.prompt_tokens = len(ids)
            request.limit = min(request.params.max_tokens, self.context_window - len(ids))
            if request.limit <= 0:
                self._fail(
                    request,
                    ValueError(
                        f"the prompt ({len(ids)} tokens) fills the model's context window of "
                        f"{self.context_window} tokens"
                    ),
                )
                continue
            if request.params.seed is not None and request.params.temperature > 0:
                request.generator = torch.Generator(device=self.device).manual_seed(_row_seed(request.params.seed, ids))
            ready.append(request)
            rows.append(ids)
        if not ready:
            return None
        contrasted = [index for index, request in enumerate(ready) if request.contrast]
        rows += [tokenizer(ready[index].contrast, add_special_tokens=False).input_ids for index in contrasted]
        heads = [request.head for request in ready] + [ready[index].contrast_head for index in contrasted]
        owner = (ready[0].params.adapter_id, ready[0].params.adapter_path)
        skips = self._plan_prefixes(rows, len(ready), owner)
        input_ids, mask, positions = self._prompt_inputs(rows, skips)
        cache = self._prefix_caches(network, rows, skips, owner) if max(skips) else None
        # logits_to_keep=1: only the last prompt position's logits are read; the output layer on every prompt
        # position would cost a fifth of the prefill and hold prompt length x 49k floats per row
        output = network(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **_cache_arg(cache),
        )
        cache = _cache_of(output)
        self._remember_prefixes(owner, rows, skips, heads, cache)
        eos_ids = tokenizer.eos_token_id
        eos = set(eos_ids if isinstance(eos_ids, list) else [eos_ids])
        logits = output.logits[:, -1, :]
        return _Running(ready, contrasted, cache, mask, positions[:, -1], logits, eos)

    def _plan_prefixes(self, rows: list[list[int]], own_rows: int, owner) -> list[int]:
        """Per row, how many leading tokens come from a key/value cache instead of this forward: the longest
        prefix stored by an earlier request, or the prefix its group shares (the requests' own rows; the
        contrast rows, whose prompts lack the documents), computed once, whichever is longer (0: none)."""
        skips = [0] * len(rows)
        for group in (range(own_rows), range(own_rows, len(rows))):
            shared = _shared_prefix([rows[index] for index in group]) if len(group) > 1 else 0
            for index in group:
                skips[index] = max(shared, self._prefixes.longest(owner, rows[index]))
        return skips

    def _prompt_inputs(self, rows: list[list[int]], shared: list[int]):
        """Input ids, attention mask and position ids of the rows after their shared prefixes, left-padded. The
        mask covers the prefix cache first (:meth:`_prefix_caches`: each row's prefix right-aligned in a block as
        long as the longest), then the rows' own tokens."""
        import torch

        pad = self.tokenizer.pad_token_id
        block = max(shared)
        width = max(len(ids) - skip for ids, skip in zip(rows, shared, strict=True))
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), block + width), dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        for index, (ids, skip) in enumerate(zip(rows, shared, strict=True)):
            own = ids[skip:]
            mask[index, block - skip : block] = 1
            input_ids[index, width - len(own) :] = torch.tensor(own)
            mask[index, block + width - len(own) :] = 1
            positions[index, width - len(own) :] = torch.arange(skip, skip + len(own))
        return input_ids.to(self.device), mask.to(self.device), positions.to(self.device)

    def _prefix_caches(self, network, rows: list[list[int]], shared: list[int], owner=None):
        """The key/value cache of every row's prefix: each distinct prefix taken from the store or run once,
        right-aligned in a block as long as the longest (zeros, masked out, before a shorter one and for rows
        without one)."""
        import torch

        block = max(shared)
        computed: dict[tuple[int, ...], tuple[list[int], list]] = {}  # prefix -> (its rows, its layers' tensors)
        for index, (ids, skip) in enumerate(zip(rows, shared, strict=True)):
            if not skip:
                continue
            key = tuple(ids[:skip])
            if key not in computed:
                layers = self._prefixes.get(owner, key)
                if layers is None:
                    prefix = torch.tensor([ids[:skip]], device=self.device)
                    layers = _cache_tensors(_cache_of(network(input_ids=prefix, use_cache=True, logits_to_keep=1)))
                computed[key] = ([], layers)
            computed[key][0].append(index)
        parts = list(computed.items())
        layers = []
        for layer in range(len(parts[0][1][1])):
            merged = []
            for part in (0, 1):  # keys, values
                sample = parts[0][1][1][layer][part]
                heads, _, dim = sample.shape[1:]
                tensor = sample.new_zeros((len(rows), heads, block, dim))
                for prefix, (members, tensors) in parts:
                    tensor[members, :, block - len(prefix) :] = tensors[layer][part]
                merged.append(tensor)
            layers.append(tuple(merged))
        return _new_cache(layers)

    def _remember_prefixes(self, owner, rows: list[list[int]], skips: list[int], heads: list[list[int]], cache):
        """Store each row's conversation-before-its-last-message (``heads``) in the prefix store, cut from the
        prompt forward's cache: a later question over the same system prompt and documents starts from it."""
        import torch

        if not self._prefixes.budget:
            return
        tensors = _cache_tensors(cache)
        total = tensors[0][0].shape[2]
        block = max(skips)
        for index, (ids, skip, head) in enumerate(zip(rows, skips, heads, strict=True)):
            size = len(head)
            if size < _MIN_SHARED_PREFIX or size >= len(ids) or ids[:size] != head:
                continue  # too short to be worth it, or the template does not write the head as a prefix
            if (owner, tuple(head)) in self._prefixes.entries:
                continue
            own = len(ids) - skip
            columns = torch.cat([torch.arange(block - skip, block), torch.arange(total - own, total)])[:size]
            columns = columns.to(tensors[0][0].device)
            layers = [
                (keys[index : index + 1, :, columns], values[index : index + 1, :, columns]) for keys, values in tensors
            ]
            self._prefixes.put(owner, tuple(head), layers)

    def _step(self, network, running: _Running) -> None:
        """One decoding step: every row's chosen token (``running.tokens``) through the network, for the logits
        of the next."""
        import torch

        running.last = running.last + 1
        ones = torch.ones((running.mask.shape[0], 1), dtype=running.mask.dtype, device=self.device)
        running.mask = torch.cat([running.mask, ones], dim=1)
        output = network(
            input_ids=running.tokens[:, None],
            attention_mask=running.mask,
            position_ids=running.last[:, None],
            use_cache=True,
            **_cache_arg(running.cache),
        )
        running.cache = _cache_of(output)
        running.logits = output.logits[:, -1, :]

    def _next_tokens(self, running: _Running):
        """Pick each request's next token and hand it over; return the tokens every row (contrast rows
        included) goes on with."""
        import torch

        requests, params = running.requests, running.params
        if running.contrasted:
            contrasted = torch.tensor(running.contrasted, dtype=torch.long, device=self.device)
            weights = torch.tensor(
                [[requests[index].params.contrast_weight] for index in running.contrasted], device=self.device
            )
            logits = running.logits
            own = _contrast(logits[: len(requests)], contrasted, logits[len(requests) :], weights)
            chosen = _pick(own, params, running.generators)
            tokens = torch.cat([chosen, chosen[contrasted]])
        else:
            chosen = tokens = _pick(running.logits, params, running.generators)
        for request, token in zip(requests, chosen.tolist(), strict=True):
            if not request.done and not request.cancelled:
                self._accept(request, int(token), running.eos)
        return tokens

    def _accept(self, request: _Request, token: int, eos: set[int]) -> None:
        if token in eos:
            self._finish(request, "stop")
            return
        request.token_ids.append(token)
        text = self.tokenizer.decode(request.token_ids, skip_special_tokens=True)
        stopped = False
        if not text.endswith("\ufffd"):  # else half of a multi-byte character: its text waits for the rest
            text, stopped = text_before_stop(text, request.params.stop)
            if len(text) > request.emitted:
                request.send(("delta", text[request.emitted :]))
                request.emitted = len(text)
            request.text = text
        if stopped or (self.loop_stop_tokens and looping(request.token_ids, self.loop_stop_tokens)):
            self._finish(request, "stop")
        elif len(request.token_ids) >= request.limit:
            self._finish(request, "length")

    def _fail(self, request: _Request, error: BaseException) -> None:
        request.done = True
        request.error = error
        request.send(("error", error))
        request.finished.set()

    def _finish(self, request: _Request, reason: str) -> None:
        request.done = True
        request.finish_reason = reason
        request.completion = Completion(
            text=request.text,
            finish_reason=reason,
            prompt_tokens=request.prompt_tokens,
            completion_tokens=len(request.token_ids),
        )
        request.send(("done", request.completion))
        request.finished.set()

    # -- scoring -------------------------------------------------------------------------------------

    def score_choices(
        self, prompt: str, choices: Sequence[str], *, adapter_id: str | None = None, adapter_path: str | None = None
    ) -> list[float]:
        """Summed log-probability of each choice's tokens after ``prompt`` (one padded forward)."""
        import torch

        tokenizer = self.tokenizer
        prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
        rows = [prompt_ids + tokenizer(choice, add_special_tokens=False).input_ids for choice in choices]
        width = max(len(row) for row in rows)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows], device=self.device)
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows], device=self.device)
        if adapter_id is not None:
            self.ensure_adapter(adapter_id, adapter_path or "")
        with self.compute_lock, self._network(adapter_id) as network:
            logits = network(input_ids=input_ids, attention_mask=mask).logits.float()
        log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
        targets = input_ids[:, 1:]
        token_scores = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        scores = []
        for index, row in enumerate(rows):
            start, end = len(prompt_ids) - 1, len(row) - 1
            scores.append(float(token_scores[index, start:end].sum()))
        return scores

    def score_batch(
        self,
        items: Sequence[tuple[str, Sequence[str]]],
        *,
        adapter_id: str | None = None,
        adapter_path: str | None = None,
        row_tokens: int = 2048,
    ) -> list[list[float]]:
        """For each (prompt, choices) item, the summed log-probability of each choice's tokens after the prompt.

        The same scores as :meth:`score_choices` per item (prompt and choice are tokenized separately), with far
        less compute, by packing the items as token trees:

        - the longest token prefix all prompts share (a block of reference documents, a template head; when it
          has at least 16 tokens) runs once, and its key/value cache is reused by every forward (not repeated
          per row);
        - each item's rest of the prompt runs once, followed by its choices, side by side: a choice attends to
          the shared prefix, its item's prompt and its own earlier tokens only, and its position ids continue
          from the end of the prompt, so every choice sees exactly what it would see alone;
        - items are packed into rows of about ``row_tokens`` tokens (an item longer than that gets a row of its
          own), and rows go into each forward as a padded batch up to a token budget.

        Attention is still computed densely over a whole row (the mask only hides tokens), so on a CPU
        shorter rows (about 512 tokens) are somewhat faster per token than long ones. Only the positions that
        predict a choice token go through the output layer. An item without choices scores ``[]``; an empty
        prompt is refused.
        """
        tokenizer = self.tokenizer
        prompts = [tokenizer(prompt, add_special_tokens=False).input_ids for prompt, _ in items]
        choices = [
            [tokenizer(choice, add_special_tokens=False).input_ids for choice in options] for _, options in items
        ]
        scores: list[list[float]] = [[0.0] * len(options) for options in choices]
        scored = [index for index, options in enumerate(choices) if options]
        for index in scored:
            if not prompts[index]:
                raise ValueError(f"item {index} has an empty prompt: its first choice token has nothing to follow")
        if not scored:
            return scores
        shared = _shared_prefix([prompts[index] for index in scored])
        trees = [ScoreTree(index, prompts[index][shared:], choices[index]) for index in scored]
        rows = pack_trees(trees, row_tokens)
        budget = max(row_tokens, FORWARD_TOKENS_GPU if self.device == "cuda" else FORWARD_TOKENS_CPU)
        if adapter_id is not None:
            self.ensure_adapter(adapter_id, adapter_path or "")
        prefix_cache = None
        if shared:
            prefix_cache = self._prefix_cache(prompts[scored[0]][:shared], adapter_id)
        # one forward at a time holds the lock, so generation requests can interleave with a long scoring job
        for group in forward_groups(rows, budget):
            self._score_group(group, shared, prefix_cache, adapter_id, scores)
        return scores

    def _prefix_cache(self, prefix_ids: list[int], adapter_id: str | None):
        """The key/value cache of the prompts' shared prefix, run once through the decoder."""
        import torch

        prefix = torch.tensor([prefix_ids], device=self.device)
        with self.compute_lock, self._network(adapter_id) as network:
            decoder = causal_lm_of(network).get_decoder()
            return _cache_of(decoder(input_ids=prefix, use_cache=True))

    def _score_group(self, group, shared: int, prefix_cache, adapter_id: str | None, scores: list[list[float]]) -> None:
        """Score one forward's packed rows: set each of their choices' summed log-probability in ``scores``."""
        import copy

        import torch

        batch = collate_trees(group, shared, self.tokenizer.pad_token_id, self.device)
        cache = None
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(group))
        with self.compute_lock, self._network(adapter_id) as network:
            causal_lm = causal_lm_of(network)
            hidden = (
                causal_lm.get_decoder()(
                    input_ids=batch.input_ids,
                    attention_mask=batch.attention_mask,
                    position_ids=batch.position_ids,
                    use_cache=cache is not None,
                    **_cache_arg(cache),
                )
                .last_hidden_state[batch.predictor_rows, batch.predictor_columns]
                .contiguous()
            )
            token_scores = target_log_probs(causal_lm, hidden, batch.predictor_of, batch.targets)
        totals = torch.zeros(batch.slot_count, dtype=torch.float64)
        totals.index_add_(0, batch.slots, token_scores.double().cpu())
        for (item_index, choice_index), total in zip(batch.slot_keys, totals.tolist(), strict=True):
            scores[item_index][choice_index] = total


# -- scoring helpers -------------------------------------------------------------------------------------

_MIN_SHARED_PREFIX = 16  # shorter shared prefixes are not worth a forward of their own
FORWARD_TOKENS_CPU = 8192  # packed tokens per forward (the shared prefix not counted)
FORWARD_TOKENS_GPU = 65536


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def _common_prefix(rows: list[list[int]]) -> int:
    first = rows[0]
    length = min(len(row) for row in rows)
    for index in range(length):
        token = first[index]
        if any(row[index] != token for row in rows):
            return index
    return length


def _shared_prefix(rows: list[list[int]]) -> int:
    """How many leading tokens all rows share, worth computing once: 0 when under ``_MIN_SHARED_PREFIX``, and
    at most every row's length but one (every row keeps a token of its own)."""
    shared = min(_common_prefix(rows), min(len(row) for row in rows) - 1)
    return shared if shared >= _MIN_SHARED_PREFIX else 0


# context-aware decoding keeps only tokens whose probability with the prompt is at least this share of the most
# likely one's (the "adaptive plausibility constraint" of contrastive decoding, Li et al. 2023): subtracting the
# contrast row must not promote a token the prompt itself finds unlikely. On samples/biographies (68 questions,
# weight 0.5) 0.1 let it promote a hyphen inside 16 names the question gave ("Lucinda-Harrowgate"); 0.3, 10;
# icl served accuracy 0.74/0.88 and 0.76/0.76 (same direction/reversed): within noise of each other
_PLAUSIBLE = 0.3


def _contrast(logits, rows, contrast_logits, weights):
    """``logits`` with rows ``rows`` replaced by (1 + w) * own - w * contrast, implausible tokens masked."""
    import math

    import torch

    own = logits[rows].float()
    log_probs = torch.log_softmax(own, dim=-1)
    plausible = log_probs >= log_probs.amax(dim=-1, keepdim=True) + math.log(_PLAUSIBLE)
    mixed = own + weights * (own - contrast_logits.float())
    combined = logits.float().clone()
    combined[rows] = mixed.masked_fill(~plausible, float("-inf"))
    return combined


def _row_seed(seed: int, prompt_ids: list[int]) -> int:
    """A seeded request's generator seed: its seed and its prompt's tokens, so that the same request answers the
    same whichever requests share its batch, and two prompts under one seed do not draw the same numbers."""
    digest = hashlib.blake2b(repr((seed, prompt_ids)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (2**63 - 1)


def _pick(logits, params: GenerationParams, generators: list | None = None):
    """Greedy, or temperature + nucleus (top-p) sampling; a row with a generator of its own (``generators``, one
    per row) draws from it, apart from the others."""
    import torch

    if params.temperature <= 0:
        return logits.argmax(dim=-1)
    # shifted to a maximum of 0 and a temperature of at least 1e-6, a tiny temperature (say 5e-324) is greedy
    # instead of inf/inf = NaN probabilities
    logits = logits.float()
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    probabilities = torch.softmax(shifted / max(params.temperature, 1e-6), dim=-1)
    if params.top_p < 1.0:
        ordered, order = probabilities.sort(dim=-1, descending=True)
        outside = ordered.cumsum(dim=-1) - ordered > params.top_p
        ordered = ordered.masked_fill(outside, 0.0)
        probabilities = torch.zeros_like(probabilities).scatter(-1, order, ordered)
    if generators is None:
        return torch.multinomial(probabilities, 1).squeeze(-1)
    rows = zip(probabilities, generators, strict=True)
    return torch.cat([torch.multinomial(row[None], 1, generator=generator)[0] for row, generator in rows])
