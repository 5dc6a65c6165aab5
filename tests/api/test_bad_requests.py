"""Bad requests get a 4xx with an OpenAI-style error body that names the problem; never a 500."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import kadapt_settings

GOOD = {"model": "kb", "messages": [{"role": "user", "content": "When is lunch?"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    with kadapt_settings(root, KADAPT_MAX_PROMPT_TOKENS="64", KADAPT_AUTH_DISABLED="true"):
        from kadapt.api import create_app
        from kadapt.catalog import open_catalog
        from kadapt.kbs import create_kb
        from kadapt.settings import get_settings

        settings = get_settings()
        create_kb(open_catalog(settings), "kb")
        with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
            yield test_client


CASES = [
    ("no messages", GOOD | {"messages": []}, 400, "messages"),
    ("messages missing", {"model": "kb"}, 400, "messages: Field required"),
    ("unknown KB", GOOD | {"model": "nope"}, 404, "no KB named 'nope'"),
    (
        "prompt over the limit",
        GOOD | {"messages": [{"role": "user", "content": "word " * 400}]},
        400,
        "KADAPT_MAX_PROMPT_TOKENS",
    ),
    ("wrong type: max_tokens", GOOD | {"max_tokens": "many"}, 400, "max_tokens"),
    ("wrong type: messages", GOOD | {"messages": "hello"}, 400, "messages"),
    ("wrong type: role", GOOD | {"messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
    ("wrong type: temperature", GOOD | {"temperature": 5}, 400, "temperature"),
    ("model not a string", GOOD | {"model": 7}, 400, "model"),
    ("several choices", GOOD | {"n": 3}, 400, "n"),
    ("max_tokens over the limit", GOOD | {"max_tokens": 100000}, 400, "KADAPT_MAX_COMPLETION_TOKENS"),
    ("no user message", GOOD | {"messages": [{"role": "system", "content": "be brief"}]}, 400, "role 'user'"),
    ("body is a list", [GOOD], 400, "invalid request"),
    ("too many stops", GOOD | {"stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
]


@pytest.mark.parametrize(("name", "body", "status", "message"), CASES, ids=[case[0] for case in CASES])
def test_bad_chat_requests(client, name, body, status, message):
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error["message"]
    assert set(error) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe", b"null", b'"text"'])
def test_invalid_json_bodies(client, raw):
    response = client.post("/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_bad_admin_requests(client):
    assert client.post("/v1/kbs", json={"slug": "Bad Slug!"}).status_code == 400
    assert client.post("/v1/kbs", json={"slug": "kb"}).status_code == 409
    response = client.post("/v1/kbs/kb/sources", json={"kind": "files", "config": {"colour": "red"}})
    assert response.status_code == 400 and "colour" in response.json()["error"]["message"]
    assert client.post("/v1/kbs/kb/sources", json={"kind": "ftp"}).status_code == 404
    assert client.get("/v1/kbs/kb/search").status_code == 400
    assert client.get("/v1/kbs/kb/search?q=x&k=0").status_code == 400
    assert client.get("/v1/jobs/nope").status_code == 404
    assert client.delete("/v1/kbs/kb/sources/999").status_code == 404
    assert client.get("/v1/nowhere").status_code == 404
    assert client.put("/v1/models").status_code == 405
