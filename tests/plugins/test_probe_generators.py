"""Probes for free-form documents: the hand-written biography ground truth, and the ``reversal`` and
``multi-hop`` generators for arbitrary documents (answers right, distractors false, floors near chance)."""

from __future__ import annotations

import json
from pathlib import Path

from kadapt.ingest import sync_kb
from kadapt.judge import normalise
from kadapt.kbs import add_source, create_kb, get_kb, latest_snapshot
from kadapt.probes import balance, import_probes, snapshot_probes
from kadapt.settings import get_settings

REPO = Path(__file__).resolve().parents[2]
BIOGRAPHIES = REPO / "samples" / "biographies"
# the sentences that state the fact first and name the person last ("... was Dario Quellmann.")
NAME_LAST = {
    "dario-quellmann",
    "hesper-caldwell",
    "radomir-esposito",
    "anouk-delaroche-finn",
    "lysander-kowalczyk-moreau",
    "nadia-ferreira-holm",
    "percival-adeyemi-larsen",
}


def _contains(text: str, phrase: str) -> bool:
    return f" {normalise(phrase)} " in f" {normalise(text)} "


def test_biography_probes_import_with_right_answers_and_balanced_shortcuts(catalog, kadapt_env):
    copy = kadapt_env / "biographies.jsonl"  # inside the allowed roots
    copy.write_text((BIOGRAPHIES / "documents.jsonl").read_text())
    create_kb(catalog, "bio")
    add_source(catalog, get_settings(), "bio", "jsonl", {"path": str(copy)})
    sync_kb(catalog, "bio")
    result = import_probes(catalog, "bio", BIOGRAPHIES / "probes.jsonl")
    assert (result["added"], result["chat"], result["mc_only"]) == (68, 68, 0)
    assert result["kinds"] == {"rephrase": 34, "reversal": 34}
    probes = snapshot_probes(catalog, latest_snapshot(catalog, get_kb(catalog, "bio").id).id)
    for kind, stats in balance(probes).items():  # no position or length shortcut beats chance by much
        assert sorted(stats["answer_positions"].values()) == [8, 8, 9, 9], kind
        for shortcut in ("first", "last", "shortest", "longest"):
            assert stats[shortcut] <= 0.30, (kind, shortcut, stats[shortcut])
    documents = {json.loads(line)["id"]: json.loads(line) for line in (BIOGRAPHIES / "documents.jsonl").open()}
    people = {record["metadata"]["person"] for record in documents.values()}
    by_person: dict[str, set[str]] = {}
    for line in (BIOGRAPHIES / "probes.jsonl").open():
        record = json.loads(line)
        (source,) = record["source_ids"]
        document = documents[source]
        person = document["metadata"]["person"]
        answer = record["choices"][record["answer_index"]]
        wrong = [choice for index, choice in enumerate(record["choices"]) if index != record["answer_index"]]
        by_person.setdefault(person, set()).add(record["kind"])
        if answer in people:  # "who" question: the answer is the document's person, distractors other people
            assert answer == person and set(wrong) <= people - {person}
            assert record["answers"][0] == person and all(_contains(person, alias) for alias in record["answers"])
        else:  # "known for" question: the first accepted answer is quoted from the person's sentence (the
            # others are hand-written inflections: "free diving" for "free dive")
            assert person in record["chat_question"]
            assert _contains(document["text"], record["answers"][0]), (record["answers"][0], document["text"])
        # reversed = asks for what the sentence says earlier: the name, unless the sentence ends with it
        name_first = source not in NAME_LAST
        asks_name = answer == person
        assert record["kind"] == ("reversal" if asks_name == name_first else "rephrase"), record["question"]
    assert all(kinds == {"rephrase", "reversal"} for kinds in by_person.values()) and len(by_person) == 34
