"""Fuzzing the API against its OpenAPI schema (schemathesis, through bench/fuzz.py): every operation gets
generated requests, valid and invalid, as an admin, an editor, a reader and with made-up keys; no answer is
a server error, and every answer has a declared status, content type and body shape.

``KADAPT_FUZZ_EXAMPLES`` sets the examples per operation and mode (default 8); ``bench/fuzz.py`` runs longer.
"""

from __future__ import annotations

import json
import os

import pytest
from bench import fuzz
from fastapi.testclient import TestClient

from tests.conftest import REPO, kadapt_settings

EXAMPLES = int(os.environ.get("KADAPT_FUZZ_EXAMPLES", "8"))


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    with kadapt_settings(root, [REPO / "samples", root], KADAPT_JOB_RUNNER=fuzz.HELD_RUNNER, **fuzz.FUZZ_SETTINGS):
        undo = fuzz.held_jobs()
        try:
            yield fuzz.prepare(root)
        finally:
            undo()


@pytest.mark.slow
def test_every_operation_answers_within_its_schema(fixtures):
    reports = list(fuzz.fuzz(fixtures, EXAMPLES, ["positive", "negative"]))
    failures = [f"{report.label}: {title}\n{detail}" for report in reports for title, detail in report.failures.items()]
    assert not failures, "\n\n".join(failures)
    operations = {report.label.rsplit(" [", 1)[0] for report in reports}
    assert len(operations) >= 25 and {"POST /v1/chat/completions", "DELETE /v1/kbs/{slug}"} <= operations
    statuses = {status for report in reports for status in report.statuses}
    assert {200, 202, 204, 400, 401, 403, 404} <= statuses  # the requests reached real objects too
    chat = next(report for report in reports if report.label == "POST /v1/chat/completions [positive]")
    assert chat.statuses[200] >= 1  # the model answered some of them


CHAT = {"model": fuzz.KB, "messages": [{"role": "user", "content": "How many leave days?"}], "max_tokens": 2}
# requests the fuzzer once got a wrong answer to, with the answer they get now
FOUND = [
    ("chat: a boolean is no number", "POST", "/v1/chat/completions", {"body": CHAT | {"top_p": True}}, 400),
    ("chat: streamed, a declared content type", "POST", "/v1/chat/completions", {"body": CHAT | {"stream": True}}, 200),
    (
        "train: 2.0 is an integer",
        "POST",
        "/v1/kbs/{slug}/train",
        {"path_parameters": {"slug": fuzz.KB}, "body": {"epochs": 2.0, "rank": 4.0}},
        202,
    ),
    (
        "train: a boolean is no integer",
        "POST",
        "/v1/kbs/{slug}/train",
        {"path_parameters": {"slug": fuzz.KB}, "body": {"epochs": True}},
        400,
    ),
    (
        "workload: a string is no number",
        "PUT",
        "/v1/kbs/{slug}/workload",
        {"path_parameters": {"slug": fuzz.KB}, "body": {"queries_per_day": "5"}},
        400,
    ),
    ("audit: an id past the catalog's integers", "GET", "/v1/audit", {"query": {"before": 2**70}}, 400),
    (
        "workload: more queries than any deployment",
        "PUT",
        "/v1/kbs/{slug}/workload",
        {"path_parameters": {"slug": fuzz.KB}, "body": {"queries_per_day": 1e200}},
        400,
    ),
    ("audit: a number is no ISO time", "GET", "/v1/audit", {"query": {"since": "0.0"}}, 400),
    # found on PostgreSQL (.ci/scaleout): its INTEGER ids are 32 bits, and its text columns refuse NUL
    ("audit: an id past PostgreSQL's integers", "GET", "/v1/audit", {"query": {"before": 2**31}}, 400),
    ("audit: NUL in a filter", "GET", "/v1/audit", {"query": {"kb": "a\x00b"}}, 200),
    ("kbs: NUL in a title", "POST", "/v1/kbs", {"body": {"slug": "nul", "title": "a\x00b"}}, 201),
    ("kbs: NUL in a key of a body, audited", "POST", "/v1/kbs", {"body": {"slug": "nul2", "a\x00b": 1}}, 400),
    ("report page: a JSON error", "GET", "/reports/{slug}", {"path_parameters": {"slug": "no-such-kb"}}, 404),
]


@pytest.mark.parametrize(
    ("method", "path", "parts", "expected"), [case[1:] for case in FOUND], ids=[case[0] for case in FOUND]
)
def test_what_the_fuzzer_found_stays_fixed(fixtures, method, path, parts, expected):
    status, failures = fuzz.replay(fixtures, method, path, **parts)
    assert (status, failures) == (expected, [])


def test_the_schema_states_the_limits_the_server_enforces(fixtures):
    # found by the fuzzer: five stop sequences, valid by the schema, were refused
    stop = fixtures.app.openapi()["components"]["schemas"]["ChatRequest"]["properties"]["stop"]["anyOf"]
    assert {"type": "array", "items": {"type": "string"}, "maxItems": 4} in stop
    status, failures = fuzz.replay(fixtures, "POST", "/v1/chat/completions", body=CHAT | {"stop": list("abcde")})
    assert (status, failures) == (400, [])


@pytest.mark.parametrize("stream", [False, True])
def test_a_vanishing_temperature_decodes_greedily(fixtures, stream):
    # found by the fuzzer: temperature 5e-324 made the sampler's probabilities NaN and the request fail
    body = {
        "model": fuzz.KB,
        "messages": [{"role": "user", "content": "How many leave days?"}],
        "max_tokens": 2,
        "temperature": 5e-324,
        "stream": stream,
    }
    headers = {"Authorization": f"Bearer {fixtures.keys['admin']}"}
    with TestClient(fixtures.app, raise_server_exceptions=False) as client:
        response = client.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200, response.text
    if stream:
        events = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert all("error" not in json.loads(event) for event in events[:-1])
    else:
        assert response.json()["choices"][0]["finish_reason"] in ("length", "stop")


@pytest.mark.parametrize(
    ("principal", "method", "path", "parts", "expected"),
    [
        ("outsider", "GET", "/v1/kbs/{slug}", {"path_parameters": {"slug": fuzz.KB}}, 403),  # a reader key
        ("outside-editor", "GET", "/v1/kbs/{slug}", {"path_parameters": {"slug": fuzz.KB}}, 404),
        ("outside-editor", "POST", "/v1/kbs/{slug}/sync", {"path_parameters": {"slug": fuzz.KB}}, 404),
        ("staff-editor", "GET", "/v1/kbs/{slug}", {"path_parameters": {"slug": fuzz.KB}}, 200),
        ("staff-editor", "POST", "/v1/kbs/{slug}/sync", {"path_parameters": {"slug": fuzz.KB}}, 403),
        ("staff-editor", "GET", "/v1/kbs/{slug}/sources", {"path_parameters": {"slug": fuzz.KB}}, 403),
        ("reader", "POST", "/v1/chat/completions", {"body": CHAT}, 200),
        ("outsider", "POST", "/v1/chat/completions", {"body": CHAT}, 404),
        ("editor", "GET", "/v1/audit", {}, 403),
    ],
)
def test_callers_get_what_their_groups_allow_and_the_oracle_agrees(fixtures, principal, method, path, parts, expected):
    status, failures = fuzz.replay(fixtures, method, path, principal=principal, **parts)
    assert (status, failures) == (expected, [])


@pytest.mark.parametrize(
    ("key", "path", "parts"),
    [
        (fuzz.FORGED_KEY, "/v1/kbs/{slug}", {"path_parameters": {"slug": fuzz.KB}}),
        ("outsider", "/v1/kbs/{slug}", {"path_parameters": {"slug": fuzz.KB}}),
        ("outside-editor", "/v1/kbs/{slug}/decision", {"path_parameters": {"slug": fuzz.KB}}),
        ("staff-editor", "/v1/kbs/{slug}/sources", {"path_parameters": {"slug": fuzz.KB}}),
        ("reader", "/v1/audit", {}),
    ],
)
def test_the_authorization_oracle_fails_a_2xx_to_a_caller_without_access(fixtures, key, path, parts):
    """The oracle can fail: an admin's real 2xx answer, presented as the answer to someone who may not have
    it, is caught."""
    admin = {"Authorization": f"Bearer {fixtures.keys['admin']}"}
    answered = fixtures.load_schema()[path]["get"].Case(headers=admin, **parts)
    response = answered.call()
    assert response.status_code == 200
    caller = fixtures.keys.get(key, key)
    posed = fixtures.load_schema()[path]["get"].Case(headers={"Authorization": f"Bearer {caller}"}, **parts)
    with pytest.raises(AssertionError, match="made-up key got 200|may not read|may not manage|only admins"):
        fuzz.authorization_oracle(fixtures)(None, response, posed)
