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

from tests.conftest import MODELS_DIR, REPO, _clear_caches

EXAMPLES = int(os.environ.get("KADAPT_FUZZ_EXAMPLES", "8"))


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("KADAPT_"):
                patch.delenv(name)
        patch.setenv("KADAPT_DATA_DIR", str(root / "data"))
        patch.setenv("KADAPT_ALLOWED_ROOTS", f"{REPO / 'samples'},{root}")
        patch.setenv("KADAPT_MODELS_DIR", str(MODELS_DIR))
        patch.setenv("KADAPT_JOB_RUNNER", fuzz.HELD_RUNNER)
        for name, value in fuzz.FUZZ_SETTINGS.items():
            patch.setenv(name, value)
        _clear_caches()
        undo = fuzz.held_jobs()
        try:
            yield fuzz.prepare(root)
        finally:
            undo()
            _clear_caches()


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
