from __future__ import annotations

import json

import pytest

from kadapt.connectors import LoadFailure
from kadapt_jsonl import JsonlConnector
from tests.connectors.conformance import ConnectorConformance, SourceUnderTest, documents, load

RECORDS = [
    {"id": "alpha", "text": "The alpha team ships robots on Mondays.", "metadata": {"team": "alpha"}},
    {"id": "bravo", "text": "Bravo handles invoices every Friday."},
    {"id": "charlie", "text": "Charlie runs the lab.", "metadata": {"title": "Charlie"}},
]


def write(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


class TestJsonlConformance(ConnectorConformance):
    @pytest.fixture
    def source(self, kadapt_env):
        path = kadapt_env / "docs.jsonl"
        records = [dict(record) for record in RECORDS]
        write(path, records)

        def change():
            records[1]["text"] = "Bravo handles invoices every Thursday now."
            write(path, records)
            return "bravo"

        def remove():
            del records[0]
            write(path, records)
            return "alpha"

        def break_one():
            lines = path.read_text().splitlines()
            lines[-1] = '{"id": "charlie", "text": 42}'
            path.write_text("\n".join(lines) + "\n")
            return "charlie"

        def make_unavailable():
            path.rename(path.with_name("moved.jsonl"))

        return SourceUnderTest(
            JsonlConnector, {"path": str(path)}, kadapt_env / "work", change, remove, break_one, make_unavailable
        )


def test_ids_metadata_and_bad_lines(kadapt_env):
    path = kadapt_env / "docs.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\nnot json\n\n" + json.dumps({"id": "alpha", "text": "again"}) + "\n")
    source = SourceUnderTest(JsonlConnector, {"path": str(path)}, kadapt_env / "w", None, None, None)
    items = load(source)
    loaded = documents(items)
    assert list(loaded) == ["alpha"] and loaded["alpha"].metadata["team"] == "alpha"
    failures = {item.locator: item.message for item in items if isinstance(item, LoadFailure)}
    assert "not valid JSON" in failures["line-2"]
    assert "already used" in failures["alpha#4"]
