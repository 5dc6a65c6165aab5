"""The default model backend with the real SmolLM2-135M-Instruct: generation, batching, scoring, LangChain."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from kadapt.models import Completion, GenerationParams, get_model_pool
from kadapt.models.langchain import KadaptChatModel

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def model():
    import os

    from tests.conftest import MODELS_DIR, clear_caches

    os.environ["KADAPT_MODELS_DIR"] = str(MODELS_DIR)
    clear_caches()
    return get_model_pool().get("smollm2-135m")


def test_converted_model_is_a_plain_safetensors_folder(model):
    from pathlib import Path

    folder = Path(model.path)
    assert (folder / "model.safetensors").exists() and (folder / "config.json").exists()
    assert "quantization_config" not in (folder / "config.json").read_text()


def test_greedy_generation_is_deterministic_and_answers(model):
    params = GenerationParams(max_tokens=12)
    first = model.generate_batch([QUESTION], params)[0]
    second = model.generate_batch([QUESTION], params)[0]
    assert first.text == second.text and "Paris" in first.text
    assert first.prompt_tokens == model.count_tokens(QUESTION)


def test_batched_rows_match_single_rows(model):
    conversations = [QUESTION, [{"role": "user", "content": "Name a primary colour."}]]
    params = GenerationParams(max_tokens=8)
    batched = model.generate_batch(conversations, params)
    single = [model.generate_batch([conversation], params)[0] for conversation in conversations]
    assert [completion.text for completion in batched] == [completion.text for completion in single]


def test_a_seeded_answer_does_not_depend_on_the_requests_beside_it(model):
    """A seeded request draws from a generator of its own: alone, in a batch of others and again, it answers the
    same (one generator per batch made a sampled augmentation depend on which requests arrived with it)."""
    story = [{"role": "user", "content": "Tell a short story about a cat."}]
    sampled = GenerationParams(max_tokens=16, temperature=1.0, seed=7)
    others = [[{"role": "user", "content": f"Write a word about the number {n}."}] for n in range(5)]
    alone = model.generate_batch([story], sampled)[0].text
    beside = model.generate_batch([*others[:3], story, *others[3:]], sampled)
    assert beside[3].text == alone == model.generate_batch([story], sampled)[0].text
    assert model.generate_batch([story], GenerationParams(max_tokens=16, temperature=1.0, seed=8))[0].text != alone


def test_max_tokens_and_stop_end_each_row(model):
    short, stopped = model.generate_batch([QUESTION, QUESTION], GenerationParams(max_tokens=3))
    assert short.completion_tokens == 3 and short.finish_reason == "length"
    stop = model.generate_batch([QUESTION], GenerationParams(max_tokens=12, stop=("France",)))[0]
    assert "France" not in stop.text and stop.finish_reason == "stop"


def test_an_answer_that_loops_ends_where_the_loop_is_plain(model, monkeypatch):
    """A question the base model answers with one stretch said over and over: it ends once the repeats span
    KADAPT_LOOP_STOP_TOKENS tokens, with what it said until then, instead of running on to max_tokens."""
    from kadapt_transformers.engine import looping

    question = [{"role": "user", "content": "Which animals are muk more dangerous than?"}]
    params = GenerationParams(max_tokens=160, stop=("\n",))
    monkeypatch.setattr(model, "loop_stop_tokens", 0)
    running = model.generate_batch([question], params)[0]
    monkeypatch.setattr(model, "loop_stop_tokens", 24)
    stopped = model.generate_batch([question, QUESTION], params)
    assert running.finish_reason == "length" and running.completion_tokens == 160
    assert stopped[0].finish_reason == "stop" and stopped[0].completion_tokens < 140
    assert running.text.startswith(stopped[0].text)
    # what it said up to there is the loop: its last part is repeated three times over
    tail = model.tokenizer(stopped[0].text, add_special_tokens=False).input_ids
    assert looping(tail, 24)
    assert "Paris" in stopped[1].text  # the other row of the batch goes on as before


def test_loops_are_repeats_of_one_stretch_spanning_the_limit():
    from kadapt_transformers.engine import looping

    assert looping([1, 2, 3] * 8, 24) and not looping([1, 2, 3] * 7, 24)
    assert looping([5] * 24, 24) and not looping([5] * 23, 24)
    assert looping([0] + list(range(11)) * 3, 24)  # three repeats of 11 tokens: 33 >= 24
    assert not looping(list(range(200)), 24) and not looping([1, 2] * 20 + [3], 24)


def test_streaming_yields_pieces_then_the_completion(model):
    async def collect():
        return [piece async for piece in model.stream(QUESTION, GenerationParams(max_tokens=10))]

    pieces = asyncio.run(collect())
    assert isinstance(pieces[-1], Completion)
    assert "".join(pieces[:-1]) == pieces[-1].text and len(pieces) > 3


def test_scoring_prefers_the_right_continuation(model):
    scores = model.score_choices("The capital of France is", [" Paris", " Berlin", " a banana"])
    assert scores[0] > scores[1] > scores[2]


def test_usable_as_a_langchain_chat_model(model):
    chat = KadaptChatModel(model=model, max_tokens=12)
    reply = chat.invoke("What is the capital of France?")
    assert "Paris" in reply.content and reply.usage_metadata["output_tokens"] > 0
    assert "".join(chunk.content for chunk in chat.stream("What is the capital of France?")) == reply.content
    assert "Paris" in asyncio.run(chat.ainvoke("What is the capital of France?")).content


# context-aware decoding: a document that contradicts what the model believes
CONFLICT_SYSTEM = "Answer the question in one sentence, using only the documents below."
CONFLICT_DOCUMENT = "Documents:\n\n[1] Atlas\nThe capital of France is Lyon; Paris lost the title in 2024."


def _conflict(with_document: bool) -> list[dict[str, str]]:
    system = CONFLICT_SYSTEM + ("\n\n" + CONFLICT_DOCUMENT if with_document else "")
    return [{"role": "system", "content": system}, *QUESTION]


def _reference_contrast(model, weight: float, steps: int) -> list[int]:
    """Context-aware decoding written out plainly: full forward passes, no cache, no batching."""
    import math

    import torch

    ids = {
        flag: model.tokenizer(model.format(_conflict(flag)), add_special_tokens=False).input_ids
        for flag in (True, False)
    }
    chosen: list[int] = []
    with torch.inference_mode():
        for _ in range(steps):
            own = model.model(input_ids=torch.tensor([ids[True] + chosen])).logits[0, -1].float()
            plain = model.model(input_ids=torch.tensor([ids[False] + chosen])).logits[0, -1].float()
            log_probs = torch.log_softmax(own, dim=-1)
            mixed = own + weight * (own - plain)
            mixed[log_probs < log_probs.max() + math.log(0.3)] = float("-inf")
            token = int(mixed.argmax())
            if token == model.tokenizer.eos_token_id:
                break
            chosen.append(token)
    return chosen


def test_context_aware_decoding_matches_its_definition_and_leaves_other_rows_alone(model):
    weight, steps = 1.0, 10
    contrasted = GenerationParams(max_tokens=steps, contrast_messages=tuple(_conflict(False)), contrast_weight=weight)
    plain = GenerationParams(max_tokens=steps)
    # one batch: a contrasted request beside a plain one (each row keeps its own decoding); holding the queue's
    # (re-entrant) lock while both are queued keeps the worker from taking the first alone
    with model._condition:
        requests = [
            model._submit(_conflict(True), contrasted, asynchronous=False),
            model._submit(QUESTION, plain, asynchronous=False),
        ]
    for request in requests:
        request.finished.wait()
    assert requests[0].token_ids == _reference_contrast(model, weight, steps)
    assert requests[1].completion.text == model.generate_batch([QUESTION], plain)[0].text
    # the prompt's token count is the request's own prompt, not the contrast row's
    assert requests[0].completion.prompt_tokens == model.count_tokens(_conflict(True))


def test_contrasted_requests_that_share_documents_decode_as_each_would_alone(model):
    """A batch of context-aware requests over the same documents: the requests' rows share the documents' prefix
    and the contrast rows their own shorter one; each prefix is computed once, and every request decodes the
    tokens it decodes alone (where no prefix is shared)."""
    documents = "\n".join(
        f"The {name} depot in {town} stores {count} pallets and opens at {hour}:00."
        for name, town, count, hour in [
            ("Velkan", "Tromsø", 412, 7),
            ("Dormir", "Bodø", 95, 9),
            ("Quorsel", "Ålesund", 230, 6),
            ("Fengal", "Molde", 58, 8),
        ]
    )
    system = "Answer in one sentence from the documents."
    questions = [
        "How many pallets does the Velkan depot store?",
        "When does the Fengal depot open?",
        "Where is Dormir?",
    ]

    def conversation(question: str, with_documents: bool) -> list[dict]:
        content = f"{system}\n\nDocuments:\n{documents}" if with_documents else system
        return [{"role": "system", "content": content}, {"role": "user", "content": question}]

    def params(question: str) -> GenerationParams:
        return GenerationParams(
            max_tokens=16, contrast_messages=tuple(conversation(question, False)), contrast_weight=0.5
        )

    with model._condition:  # all three queued before the worker takes a batch
        requests = [model._submit(conversation(q, True), params(q), asynchronous=False) for q in questions]
    for request in requests:
        request.finished.wait()
    alone = [model.generate_batch([conversation(q, True)], params(q))[0] for q in questions]
    assert [request.completion.text for request in requests] == [completion.text for completion in alone]
    assert "412" in alone[0].text  # the documents were read
    # the batch's prefixes: the documents, the contrast's system prompt (nothing stored, for a batch's own sharing)
    rows = [model.tokenizer(request.prompt, add_special_tokens=False).input_ids for request in requests]
    rows += [model.tokenizer(request.contrast, add_special_tokens=False).input_ids for request in requests]
    with _no_prefix_store(model):
        shared = model._plan_prefixes(rows, 3, (None, None))
    assert shared[:3] == [shared[0]] * 3 and shared[0] > 100
    assert shared[3:] == [shared[3]] * 3 and 16 <= shared[3] < 40


@contextlib.contextmanager
def _no_prefix_store(model):
    budget = model._prefixes.budget
    model._prefixes.budget = 0
    try:
        yield
    finally:
        model._prefixes.budget = budget


# continuous batching: a long answer under way, and requests that come while it decodes
STORY = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]


def _submit_while_decoding(model, later: list[list[dict]], params: GenerationParams, *, tokens: int = 4):
    """Start a long answer, then submit ``later`` once it has decoded ``tokens`` tokens: (long, later requests)."""
    import time

    long = model._submit(STORY, GenerationParams(max_tokens=60), asynchronous=False)
    deadline = time.monotonic() + 120
    while len(long.token_ids) < tokens and not long.done:
        assert time.monotonic() < deadline, "the long answer did not start"
        time.sleep(0.005)
    assert not long.done
    return long, [model._submit(messages, params, asynchronous=False) for messages in later]


def test_a_request_that_comes_while_a_batch_decodes_joins_it_and_leaves_when_done(model, monkeypatch):
    """Continuous batching: the short question joins the long answer's batch at the next step and is answered
    while the long one still decodes, with the text it gets alone; the long answer is the same as alone too."""
    params = GenerationParams(max_tokens=8)
    long, (short,) = _submit_while_decoding(model, [QUESTION], params)
    short.finished.wait()
    assert not long.done, "the short answer waited for the whole batch"
    long.finished.wait()
    assert long.completion.completion_tokens > short.completion.completion_tokens + 8
    assert short.completion.text == model.generate_batch([QUESTION], params)[0].text and "Paris" in short.text
    assert long.completion.text == model.generate_batch([STORY], GenerationParams(max_tokens=60))[0].text
    # static batching, for comparison: the short question waits for the whole batch to end
    monkeypatch.setattr(model, "continuous", False)
    long, (short,) = _submit_while_decoding(model, [QUESTION], params)
    long.finished.wait()
    assert not short.done
    short.finished.wait()
    assert "Paris" in short.completion.text


def test_requests_that_join_keep_their_own_decoding_and_settings_apart(model):
    """Joining requests: a context-aware one (two rows) and a plain one decode as they do alone; a request with
    other sampling settings does not join, and one whose prompt fills the context window fails alone."""
    contrasted = GenerationParams(max_tokens=10, contrast_messages=tuple(_conflict(False)), contrast_weight=1.0)
    plain = GenerationParams(max_tokens=8)
    sampled = GenerationParams(max_tokens=4, temperature=0.7, seed=1)
    huge = [{"role": "user", "content": "word " * (model.context_window + 10)}]
    long, _ = _submit_while_decoding(model, [], plain)
    with model._condition:  # all queued at one step of the long answer
        context_aware = model._submit(_conflict(True), plain, asynchronous=False)
        other = model._submit(QUESTION, plain, asynchronous=False)
        late_contrast = model._submit(_conflict(True), contrasted, asynchronous=False)
        too_long = model._submit(huge, plain, asynchronous=False)
        sampling = model._submit(QUESTION, sampled, asynchronous=False)
    for request in (context_aware, other, late_contrast, too_long, sampling, long):
        request.finished.wait()
    assert context_aware.completion.text == model.generate_batch([_conflict(True)], plain)[0].text
    assert other.completion.text == model.generate_batch([QUESTION], plain)[0].text
    assert late_contrast.token_ids == _reference_contrast(model, 1.0, 10)
    assert isinstance(too_long.error, ValueError) and "context window" in str(too_long.error)
    assert long.error is None and long.completion.completion_tokens > 8
    assert sampling.completion.text == model.generate_batch([QUESTION], sampled)[0].text


def test_a_question_over_the_same_documents_reuses_their_cache(model, monkeypatch):
    """The conversation before the last message (system prompt and documents) is kept after a request: the next
    question over it runs only its own tokens, and answers token for token as without the store."""
    documents = "\n".join(f"Depot {name} stores {count} pallets." for name, count in DEPOTS)
    system = {"role": "system", "content": f"Answer in one sentence from the documents.\n\nDocuments:\n{documents}"}
    questions = ["How many pallets does depot Velkan store?", "How many pallets does depot Fengal store?"]
    params = GenerationParams(max_tokens=12)
    with _no_prefix_store(model):
        plain = [model.generate_batch([[system, {"role": "user", "content": q}]], params)[0] for q in questions]
    forwarded: list[int] = []
    network = model._network

    @contextlib.contextmanager
    def counting(adapter_id):
        with network(adapter_id) as module:

            def forward(*args, **kwargs):
                forwarded.append(kwargs["input_ids"].shape[1])
                return module(*args, **kwargs)

            yield forward

    monkeypatch.setattr(model, "_network", counting)
    first = model.generate_batch([[system, {"role": "user", "content": questions[0]}]], params)[0]
    stored = [tokens for owner, tokens in model._prefixes.entries if owner == (None, None)]
    assert stored, "the documents' prefix was not kept"
    forwarded.clear()
    second = model.generate_batch([[system, {"role": "user", "content": questions[1]}]], params)[0]
    assert [first.text, second.text] == [completion.text for completion in plain]
    # the prompt forward ran the question's tokens alone, not the documents' 100 and more
    assert forwarded[0] < 40 and second.prompt_tokens > forwarded[0] + 100


DEPOTS = [("Velkan", 412), ("Dormir", 95), ("Quorsel", 230), ("Fengal", 58), ("Brisko", 17), ("Antel", 300)]
DEPOTS += [("Merrow", 44), ("Tinsel", 76), ("Garvik", 121), ("Olbrek", 9)]


def test_the_prefix_store_keeps_the_longest_match_and_drops_the_least_recently_used():
    import torch

    from kadapt_transformers._batching import _PrefixStore

    def layers(length: int):  # one layer, 1 KiB per token for keys and values together
        return [(torch.zeros(1, 1, length, 128), torch.zeros(1, 1, length, 128))]

    store = _PrefixStore(budget_bytes=40 * 1024)
    store.put("base", (1, 2, 3), layers(3))
    store.put("base", (1, 2, 3, 4, 5), layers(5))
    store.put("adapter", (1, 2, 3, 4, 5, 6), layers(6))
    assert store.longest("base", [1, 2, 3, 4, 5, 6, 7]) == 5
    assert store.longest("base", [1, 2, 3, 4, 5]) == 3  # a row keeps a token of its own
    assert store.longest("base", [9, 2, 3, 4]) == 0 and store.longest("other", [1, 2, 3, 4]) == 0
    assert store.get("base", (1, 2, 3)) is not None  # now the most recently used
    store.put("base", (7,) * 30, layers(30))  # 44 KiB in all: the least recently used goes
    assert ("base", (1, 2, 3, 4, 5)) not in store.entries and ("base", (1, 2, 3)) in store.entries
    assert store.size <= store.budget
    store.put("base", (8,) * 50, layers(50))  # larger than the whole budget: not kept
    assert ("base", (8,) * 50) not in store.entries


def test_max_tokens_ends_an_answer_cut_inside_a_multi_byte_character(model):
    """A row whose text ends in half a character (a byte-level token) still ends at its token limit."""
    from kadapt_transformers._batching import _Request

    half = model.tokenizer.convert_tokens_to_ids("Ã")  # the first byte of "é" and of other two-byte characters
    assert model.tokenizer.decode([half]).endswith("\ufffd")
    request = _Request(prompt="", params=GenerationParams(max_tokens=3), limit=3)
    for _ in range(3):
        assert not request.done
        model._accept(request, half, eos=set())
    assert request.done and request.completion.finish_reason == "length" and request.completion.completion_tokens == 3


def test_scoring_is_not_shut_out_by_a_batch_under_way(model):
    """The decoding worker gives the model to a waiting scorer (routing, the pilot's MC) between two steps."""
    long, _ = _submit_while_decoding(model, [], GenerationParams())
    scores = model.score_choices("The capital of France is", [" Paris", " Berlin"])
    assert not long.done, "scoring waited for the whole batch"
    assert scores[0] > scores[1]
    long.finished.wait()
