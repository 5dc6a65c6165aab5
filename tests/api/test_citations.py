"""icl answers through a live ``kadapt serve`` on 127.0.0.1: the answer states the right fact and no other, and
its citation quotes the supporting sentence of the document, verbatim."""

from __future__ import annotations

import json

import httpx

from kadapt.judge import StringJudge

QUESTION = "How many days of paid annual leave does a full-time employee get?"
# the other leave figures of the handbook: an answer that names one of them is wrong
DISTRACTORS = ["5 days", "5 unused days", "18 weeks", "8 weeks", "five working days", "three days", "two weeks"]
SUPPORT = "Every full-time employee receives **27 days of paid annual leave** per calendar year, plus public holidays."


def ask(live, **body):
    return httpx.post(
        live.server.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {live.keys['reader']}"},
        json={"model": "handbook", "messages": [{"role": "user", "content": QUESTION}], **body},
        timeout=300,
    )


def leave_policy_text() -> str:
    """The document's text as the server's catalog holds it (what a quote must be a slice of)."""
    from sqlalchemy import select

    from kadapt.catalog import Document, open_catalog
    from kadapt.settings import get_settings

    with open_catalog(get_settings()).session() as session:
        return session.scalars(select(Document.text).where(Document.locator == "policies/leave-policy.md")).one()


def test_the_answer_names_the_fact_and_its_citation_quotes_the_supporting_sentence_verbatim(live):
    response = ask(live)  # no max_tokens and no stop: the default one-line answer
    assert response.status_code == 200, response.text
    body = response.json()
    answer = body["choices"][0]["message"]["content"]
    verdict = StringJudge().judge(answer, accepted=["27 days", "27"], distractors=DISTRACTORS, question=QUESTION)
    assert verdict.correct, (answer, verdict.reason)
    assert "\n" not in answer.strip()  # one line

    citation = body["citations"][0]
    assert citation["locator"] == "policies/leave-policy.md" and citation["document_id"]
    assert citation["index"] in [source["index"] for source in body["sources"]]
    assert " ".join(citation["quote"].split()) == SUPPORT
    assert citation["quote"] in leave_policy_text()  # verbatim: a slice of the document as the KB holds it


def test_a_streamed_answer_sends_its_citations_with_the_finishing_chunk(live):
    with httpx.stream(
        "POST",
        live.server.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {live.keys['reader']}"},
        json={"model": "handbook", "messages": [{"role": "user", "content": QUESTION}], "stream": True},
        timeout=300,
    ) as response:
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data:")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    answer = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)
    (finishing,) = [chunk for chunk in chunks if chunk["choices"][0]["finish_reason"]]
    assert "citations" not in chunks[0] and all("citations" not in chunk for chunk in chunks if chunk is not finishing)
    # greedy: the streamed answer is the non-streamed one, and so are its citations
    assert answer == ask(live).json()["choices"][0]["message"]["content"]
    assert finishing["citations"] == ask(live).json()["citations"]
    assert " ".join(finishing["citations"][0]["quote"].split()) == SUPPORT


def test_the_most_relevant_document_is_read_last_next_to_the_question(live):
    """Sources list it first; the prompt puts it last, where the small model answers from."""
    from kadapt.catalog import open_catalog
    from kadapt.kbs import get_kb
    from kadapt.models import ModelPool
    from kadapt.plugins import get_plugins
    from kadapt.serving import prepare_chat
    from kadapt.settings import get_settings
    from kadapt.store import get_store

    settings = get_settings()
    catalog = open_catalog(settings)
    model = ModelPool(settings, get_plugins()).get("smollm2-135m")
    question = [{"role": "user", "content": QUESTION}]
    prepared = prepare_chat(
        catalog, get_store(settings), get_kb(catalog, "handbook"), model, question, settings, max_tokens=64
    )
    assert len(prepared.sources) > 1 and prepared.sources[0].locator == "policies/leave-policy.md"
    documents = prepared.messages[0]["content"].split("Documents:", 1)[1]
    last = documents.rsplit("\n<<<\n", 1)[0].rsplit("\n", 1)[-1]  # the heading of the last fenced document
    assert last.startswith("[1] ") and "policies/leave-policy.md" in last
    assert [passage.index for passage in prepared.passages] == [source.index for source in prepared.sources]
    assert SUPPORT.split("**")[0] in prepared.passages[0].text
