"""The default model backend with the real SmolLM2-135M-Instruct: generation, batching, scoring, LangChain."""

from __future__ import annotations

import asyncio

import pytest

from kadapt.models import Completion, GenerationParams, get_model_pool
from kadapt.models.langchain import KadaptChatModel

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def model():
    import os

    from tests.conftest import MODELS_DIR, _clear_caches

    os.environ["KADAPT_MODELS_DIR"] = str(MODELS_DIR)
    _clear_caches()
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


def test_max_tokens_and_stop_end_each_row(model):
    short, stopped = model.generate_batch([QUESTION, QUESTION], GenerationParams(max_tokens=3))
    assert short.completion_tokens == 3 and short.finish_reason == "length"
    stop = model.generate_batch([QUESTION], GenerationParams(max_tokens=12, stop=("France",)))[0]
    assert "France" not in stop.text and stop.finish_reason == "stop"


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
