"""Document permissions end to end: one KB read by two groups, hr and finance, whose documents carry readers
from their source (a JSON Lines file's ``metadata.readers``). Through a live server, the API's search and chat
and the console's chat and document pages never give one group a document of the other's; an adapter, which has
seen every document, answers only a caller who may read them all."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import REPO, handbook_server
from tests.web.conftest import sign_in

pytestmark = pytest.mark.slow

PRINCIPALS = {"admin": ("admin", []), "hr": ("reader", ["hr"]), "finance": ("reader", ["finance"])}
DOCUMENTS = [
    {
        "id": "holidays",
        "text": "Company holidays: the office closes on 24 December.",
        "metadata": {"title": "Holidays"},
    },
    {
        "id": "salaries",
        "text": "Salary bands: a senior engineer at Northwind earns between 91,000 and 118,000 euros.",
        "metadata": {"title": "Salary bands", "readers": ["hr"]},
    },
    {
        "id": "budget",
        "text": "The 2027 budget: Northwind plans to spend 4.2 million euros on its new Lyon plant.",
        "metadata": {"title": "Budget 2027", "readers": ["finance"]},
    },
]
SECRETS = {"hr": "118,000", "finance": "4.2 million"}  # what only that group may learn
OTHER = {"hr": "finance", "finance": "hr"}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("permissions")
    folder = root / "exports"
    folder.mkdir()
    (folder / "policies.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCUMENTS))

    def setup(catalog, settings):
        from kadapt.kbs import add_source, create_kb
        from kadapt.sync import sync_kb

        create_kb(catalog, "policies", reader_groups=["hr", "finance"])
        add_source(catalog, settings, "policies", "jsonl", {"path": str(folder / "policies.jsonl")})
        assert sync_kb(catalog, "policies").added == 3

    with handbook_server(root, PRINCIPALS, allowed_roots=[folder, REPO / "samples"], setup=setup) as server:
        yield server


def api(live, who: str) -> httpx.Client:
    return httpx.Client(base_url=live.url, timeout=300, headers={"Authorization": f"Bearer {live.keys[who]}"})


def chat_body(question: str) -> dict:
    return {"model": "policies", "messages": [{"role": "user", "content": question}], "max_tokens": 24}


@pytest.mark.parametrize("who", ["hr", "finance"])
def test_search_and_chat_through_the_api_never_give_a_group_the_others_document(live, who):
    other = OTHER[who]
    with api(live, who) as client:
        hits = client.get("/v1/kbs/policies/search", params={"q": "salary budget plant euros", "k": 10}).json()
        assert {hit["locator"] for hit in hits} == {"holidays", {"hr": "salaries", "finance": "budget"}[who]}
        for question in (
            f"What does the {other} document say?",
            "How much is spent on the Lyon plant?",
            "What does a senior engineer earn?",
        ):
            response = client.post("/v1/chat/completions", json=chat_body(question))
            assert response.status_code == 200, response.text
            body = response.json()
            cited = {source["locator"] for source in body["sources"]} | {c["locator"] for c in body["citations"]}
            assert cited <= {"holidays", {"hr": "salaries", "finance": "budget"}[who]}, cited
            assert SECRETS[other] not in body["choices"][0]["message"]["content"]


def test_each_group_is_answered_from_its_own_document(live):
    with api(live, "finance") as client:
        body = client.post(
            "/v1/chat/completions", json=chat_body("What does the 2027 budget plan for Lyon?") | {"max_tokens": 64}
        )
        answer = body.json()["choices"][0]["message"]["content"]
        assert "4.2 million" in answer, answer
        assert body.json()["sources"][0]["locator"] == "budget"
    with api(live, "admin") as client:  # an admin reads every document
        hits = client.get("/v1/kbs/policies/search", params={"q": "euros", "k": 10}).json()
        assert {hit["locator"] for hit in hits} == {"holidays", "salaries", "budget"}


@pytest.mark.parametrize("who", ["hr", "finance"])
def test_the_console_shows_a_group_neither_the_others_document_nor_its_sources(live, who):
    from sqlalchemy import select

    from kadapt.catalog import Document

    with live.catalog.session() as session:
        ids = dict(session.execute(select(Document.locator, Document.id)).all())
    session = sign_in(live.url, live.keys[who])
    mine, theirs = {"hr": ("salaries", "budget"), "finance": ("budget", "salaries")}[who]
    assert session.client.get(f"/ui/kbs/policies/documents/{ids[mine]}").status_code == 200
    hidden = session.client.get(f"/ui/kbs/policies/documents/{ids[theirs]}")
    assert hidden.status_code == 404 and SECRETS[OTHER[who]] not in hidden.text
    question = {"kb": "policies", "messages": [{"role": "user", "content": "Salary bands and the 2027 budget?"}]}
    streamed = session.client.post(
        "/ui/chat/stream", json=question | {"max_tokens": 24}, headers={"X-CSRF-Token": session.csrf}
    )
    assert streamed.status_code == 200, streamed.text
    lines = [json.loads(line) for line in streamed.text.splitlines() if line.strip()]
    sources = {source["locator"] for line in lines if line["type"] == "sources" for source in line["sources"]}
    assert theirs not in sources and SECRETS[OTHER[who]] not in streamed.text


def test_an_adapter_answers_only_a_caller_who_may_read_every_document(live):
    from kadapt.catalog import Adapter
    from kadapt.kbs import get_kb
    from kadapt.models import ModelPool
    from kadapt.plugins import get_plugins
    from kadapt.serving import prepare_chat
    from kadapt.store import get_store

    kb = get_kb(live.catalog, "policies")
    model = ModelPool(live.settings, get_plugins()).get("smollm2-135m")
    adapter = Adapter(id="a1", kb_id=kb.id, mode="ft", base_model="smollm2-135m", path="/unused", state="ready")
    messages = [{"role": "user", "content": "What does a senior engineer earn?"}]
    store = get_store(live.settings)

    def prepared(audience):
        return prepare_chat(
            live.catalog, store, kb, model, messages, live.settings, max_tokens=16, adapter=adapter, audience=audience
        )

    assert prepared(None).mode == "adapter:ft"  # an admin (or an evaluation) may be answered by the adapter
    hr = prepared(frozenset({"hr"}))  # the adapter has seen the budget, which hr may not read
    assert not hr.mode.startswith("adapter") and "restricted" in hr.extra
    assert {source.locator for source in hr.sources} <= {"holidays", "salaries"}
    assert SECRETS["finance"] not in json.dumps(hr.messages)
    assert prepared(frozenset({"hr", "finance"})).mode == "adapter:ft"  # may read every document
    # an adapter that learned from a document since deleted (restricted to payroll) keeps what it learned
    adapter.config = {"readers": [["payroll"]]}
    assert not prepared(frozenset({"hr", "finance"})).mode.startswith("adapter")
    assert prepared(frozenset({"hr", "finance", "payroll"})).mode == "adapter:ft"


def test_the_decision_names_the_restricted_documents(live):
    from kadapt.kbs import get_kb
    from kadapt.policy import _permissions_note

    note = _permissions_note(live.catalog, get_kb(live.catalog, "policies"))
    assert note.startswith("Permissions: 2 of 3 documents may be read only by some groups (finance, hr).")
