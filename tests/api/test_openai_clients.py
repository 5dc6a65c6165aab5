"""Unchanged OpenAI clients against a live ``kadapt serve`` on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re

import httpx
import openai
import pytest

QUESTION = "How many days of paid annual leave does a full-time employee get?"


def client(live, key="reader") -> openai.OpenAI:
    return openai.OpenAI(base_url=live.server.url + "/v1", api_key=live.keys[key], max_retries=0, timeout=300)


def test_models_lists_only_readable_kbs(live):
    assert [model.id for model in client(live).models.list()] == ["handbook"]
    assert [model.id for model in client(live, "outsider").models.list()] == []


def test_completion_cites_the_right_document(live):
    response = client(live).chat.completions.create(
        model="handbook", messages=[{"role": "user", "content": QUESTION}], max_tokens=48
    )
    answer = response.choices[0].message.content
    # the fact, from the leave policy ("27 days of paid annual leave"), and no other number of days
    assert "27" in answer and not re.search(r"\b(?!27\b)\d+ (?:working )?days", answer), answer
    assert response.choices[0].finish_reason in ("stop", "length")
    assert response.usage.completion_tokens > 0 and response.usage.prompt_tokens > 50
    sources = response.model_extra["sources"]
    assert sources[0]["locator"] == "policies/leave-policy.md"


@pytest.mark.parametrize(
    ("question", "locator"),
    [
        ("What is the nightly hotel limit in London?", "policies/travel-policy.pdf"),
        ("How much does the company pay into the pension plan?", "benefits-overview.docx"),
        ("Where do I pick up my laptop on my first day?", "it/onboarding.html"),
    ],
)
def test_sources_follow_the_question(live, question, locator):
    response = client(live).chat.completions.create(
        model="handbook", messages=[{"role": "user", "content": question}], max_tokens=1
    )
    assert response.model_extra["sources"][0]["locator"] == locator


def test_streamed_completion(live):
    stream = client(live).chat.completions.create(
        model="handbook",
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=32,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert "27" in text, text  # streamed, the same fact
    assert len([chunk for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]) > 3
    assert chunks[0].model_extra["sources"][0]["locator"] == "policies/leave-policy.md"
    assert any(chunk.choices and chunk.choices[0].finish_reason for chunk in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_sse_stream_ends_with_done(live):
    with httpx.stream(
        "POST",
        live.server.url + "/v1/chat/completions",
        timeout=300,
        headers={"Authorization": f"Bearer {live.keys['reader']}"},
        json={"model": "handbook", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4, "stream": True},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    assert lines[-1] == "data: [DONE]"


def test_langchain_chat_openai(live):
    langchain_openai = pytest.importorskip("langchain_openai")
    chat = langchain_openai.ChatOpenAI(
        model="handbook",
        base_url=live.server.url + "/v1",
        api_key=live.keys["reader"],
        max_tokens=24,
        temperature=0,
        max_retries=0,
        timeout=300,
    )
    assert chat.invoke(QUESTION).content.strip()
    assert "".join(chunk.content for chunk in chat.stream(QUESTION)).strip()


def test_sixteen_concurrent_streams_share_one_model(live):
    async def one(index: int) -> str:
        async_client = openai.AsyncOpenAI(
            base_url=live.server.url + "/v1", api_key=live.keys["reader"], max_retries=0, timeout=600
        )
        stream = await async_client.chat.completions.create(
            model="handbook",
            messages=[{"role": "user", "content": f"Question {index}: where is the Lisbon office?"}],
            max_tokens=12,
            stream=True,
        )
        pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
        await async_client.close()
        return "".join(pieces)

    async def main():
        return await asyncio.gather(*(one(index) for index in range(16)))

    answers = asyncio.run(main())
    assert len(answers) == 16 and all(answer.strip() for answer in answers)
    health = httpx.get(live.server.url + "/healthz").json()
    assert health["models"] == [{"id": "smollm2-135m", "instances": 1}]
    assert " 500 " not in live.server.output() and "Traceback" not in live.server.output()


def test_openai_backend_talks_to_an_openai_compatible_server(live):
    """The `openai` model backend, pointed at a real OpenAI-compatible server (kadapt's own)."""
    from kadapt.models import Completion, GenerationParams
    from kadapt.models.langchain import KadaptChatModel
    from kadapt.settings import Settings
    from kadapt_openai import OpenAIBackend

    settings = Settings(openai_base_url=live.server.url + "/v1", openai_api_key=live.keys["reader"])
    model = OpenAIBackend().open("handbook", settings)
    question = [{"role": "user", "content": QUESTION}]
    params = GenerationParams(max_tokens=8)
    batch = model.generate_batch([question, question], params)
    assert all(completion.text.strip() and completion.completion_tokens > 0 for completion in batch)

    async def stream():
        return [piece async for piece in model.stream(question, params)]

    pieces = asyncio.run(stream())
    assert isinstance(pieces[-1], Completion) and "".join(pieces[:-1]) == pieces[-1].text
    assert KadaptChatModel(model=model, max_tokens=8).invoke(QUESTION).content.strip()
