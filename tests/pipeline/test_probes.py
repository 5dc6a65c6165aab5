"""Probes: import formats and their errors, synthetic probes, carry-over across snapshots, leakage,
shortcut balance and the pilot sample."""

from __future__ import annotations

import json

import pytest

from kadapt.errors import InvalidInput
from kadapt.kbs import add_source, create_kb, get_kb, latest_snapshot
from kadapt.probes import balance, generate_probes, import_probes, leaked, snapshot_probes
from kadapt.settings import get_settings
from kadapt.sync import sync_kb
from kadapt.synthetic import build_dataset


@pytest.fixture
def reversal_kb(catalog, kadapt_env):
    """A KB built from the synthetic reversal dataset through the import formats (8 facts, 3 articles each)."""
    dataset = build_dataset("reversal", 8, seed=1)
    documents, probes = dataset.write_jsonl(kadapt_env / "bench")
    create_kb(catalog, "rev")
    add_source(catalog, get_settings(), "rev", "jsonl", {"path": str(documents)})
    sync_kb(catalog, "rev")
    return dataset, documents, probes


def write_lines(path, records):
    path.write_text("".join((record if isinstance(record, str) else json.dumps(record)) + "\n" for record in records))
    return path


def test_import_probes_and_their_errors(catalog, reversal_kb, kadapt_env):
    dataset, _, probes_path = reversal_kb
    result = import_probes(catalog, "rev", probes_path)
    assert result["added"] == len(dataset.probes) == 16
    assert import_probes(catalog, "rev", probes_path)["duplicates"] == 16  # a second import adds nothing
    good = {"question": "Glon are", "choices": ["a", "b"], "answer_index": 0, "kind": "reversal"}
    cases = [
        (["{not json"], ":1: not valid JSON"),
        ([good, {k: v for k, v in good.items() if k != "choices"}], ":2: missing 'choices'"),
        ([good | {"answer_index": 2}], "'answer_index' must be an integer from 0 to 1"),
        ([good | {"kind": "Bad Kind!"}], "kind 'Bad Kind!' is not a probe kind name; use 1 to 32 lowercase"),
        ([good | {"chat_question": "  "}], "'chat_question' must be a non-empty string"),
        ([good | {"chat_question": "Who?", "answers": []}], "'answers' must be a non-empty list"),
        ([good | {"answers": ["a"]}], "'answers' without a 'chat_question'"),
        (
            [good | {"choices": ["Oslo", "Rome"], "chat_question": "Where?", "answers": ["Oslo", "rome."]}],
            r"accepted answer 'rome\.' is also a wrong choice \('Rome'\)",
        ),
        ([good | {"chat_question": "Which?", "answers": ["the"]}], "strings with words"),
        ([good | {"answer_index": True}], "'answer_index' must be an integer"),
        ([good | {"choices": ["a", "A"]}], "choices must differ"),
        ([good | {"source_ids": ["nope"]}], "source id 'nope' is not a document of KB 'rev'"),
        ([], "no probes in the file"),
    ]
    snapshot = latest_snapshot(catalog, get_kb(catalog, "rev").id)
    for records, message in cases:
        with pytest.raises(InvalidInput, match=message):
            import_probes(catalog, "rev", write_lines(kadapt_env / "bad.jsonl", [*records]))
    assert len(snapshot_probes(catalog, snapshot.id)) == 16  # a bad file imported nothing
    with pytest.raises(InvalidInput, match="no such file"):
        import_probes(catalog, "rev", kadapt_env / "missing.jsonl")


def test_imported_probes_keep_their_chat_form_and_their_own_kinds(catalog, reversal_kb, kadapt_env):
    records = [
        {
            "question": "Ann is taller than",
            "choices": ["Bo", "Cy"],
            "answer_index": 0,
            "kind": "deduction",
            "chat_question": "Who is Ann taller than?",
            "answers": ["Bo", "Bo Lind"],
        },
        {"question": "Dee is a", "choices": ["cat", "dog"], "answer_index": 1, "kind": "membership"},
        {  # a chat question without answers is answered by the answer choice
            "question": "Eve lives in",
            "choices": ["Oslo", "Rome"],
            "answer_index": 1,
            "kind": "membership",
            "chat_question": "Where does Eve live?",
        },
    ]
    result = import_probes(catalog, "rev", write_lines(kadapt_env / "external.jsonl", records))
    assert (result["added"], result["chat"], result["mc_only"]) == (3, 2, 1)
    assert result["kinds"] == {"deduction": 1, "membership": 2}
    snapshot = latest_snapshot(catalog, get_kb(catalog, "rev").id)
    probes = {probe.kind + ":" + probe.question: probe for probe in snapshot_probes(catalog, snapshot.id)}
    deduction = probes["deduction:Ann is taller than"]
    assert (deduction.chat_question, deduction.answers) == ("Who is Ann taller than?", ["Bo", "Bo Lind"])
    assert (probes["membership:Dee is a"].chat_question, probes["membership:Dee is a"].answers) == (None, [])
    assert probes["membership:Eve lives in"].answers == ["Rome"]
    assert balance(probes.values())["membership"]["n"] == 2  # reported under its own kind
    # a new snapshot carries the chat form over with the probe
    dataset = reversal_kb[0]
    extra = kadapt_env / "bench" / "documents.jsonl"
    extra.write_text(extra.read_text() + json.dumps({"id": "new", "text": "Zorp are tall."}) + "\n")
    sync_kb(catalog, "rev")
    carried = generate_probes(catalog, "rev", names=[])
    assert carried["carried_over"] == 3 and len(dataset.probes) == 16
    moved = {p.question: p for p in snapshot_probes(catalog, carried["snapshot"])}
    assert moved["Ann is taller than"].answers == ["Bo", "Bo Lind"]
    # and the KB can be told to care about a benchmark's own kinds, not only the built-in ones
    from kadapt.policy import set_workload

    assert set_workload(catalog, "rev", {"kinds": ["deduction", "reversal"]}).workload["kinds"] == [
        "deduction",
        "reversal",
    ]
    with pytest.raises(InvalidInput, match="unknown probe kind.*deductions.*use .*membership"):
        set_workload(catalog, "rev", {"kinds": ["deductions"]})


def test_cli_lists_the_chat_form_and_reports_mc_only_imports(catalog, reversal_kb, kadapt_env):
    from typer.testing import CliRunner

    from kadapt.cli import build_app

    records = [
        {"question": "Ann is", "choices": ["tall", "short"], "answer_index": 0, "kind": "trait"},
        {
            "question": "Bo is",
            "choices": ["tall", "short"],
            "answer_index": 1,
            "kind": "trait",
            "chat_question": "How tall is Bo?",
            "answers": ["short", "not tall"],
        },
    ]
    runner, app = CliRunner(), build_app()
    imported = runner.invoke(app, ["probes", "import", "rev", str(write_lines(kadapt_env / "p.jsonl", records))])
    assert imported.exit_code == 0, imported.output
    assert "1 with a chat form, 1 MC-only; kinds: trait 2" in " ".join(imported.output.split())
    listed = runner.invoke(app, ["probes", "list", "rev", "--kind", "trait", "--json"])
    rows = {row["question"]: row for row in json.loads(listed.output)["probes"]}
    assert rows["Bo is"]["chat_question"] == "How tall is Bo?" and rows["Bo is"]["answers"] == ["short", "not tall"]
    assert rows["Ann is"]["chat_question"] is None and rows["Ann is"]["answers"] == []


def test_synthetic_generator_rebuilds_the_exact_probes_and_they_are_balanced(catalog, reversal_kb):
    dataset, _, _ = reversal_kb
    result = generate_probes(catalog, "rev", names=["synthetic"])
    assert result["by_generator"]["synthetic"]["added"] == len(dataset.probes)
    probes = snapshot_probes(catalog, result["snapshot"])
    expected = {
        (p["question"], tuple(p["choices"]), p["answer_index"], p["kind"], p["chat_question"], tuple(p["answers"]))
        for p in dataset.probes
    }
    stored = {(p.question, tuple(p.choices), p.answer_index, p.kind, p.chat_question, tuple(p.answers)) for p in probes}
    assert stored == expected and all(p.chat_question for p in probes)
    assert all(len(probe.source_ids) == 3 for probe in probes)  # a fact's three articles
    for kind, row in balance(probes).items():
        assert row["answer_positions"] == {"0": 4, "1": 4}, kind
        for shortcut in ("first", "last", "shortest", "longest"):
            assert row[shortcut] <= 0.75, (kind, shortcut, row)  # no shortcut far above chance
        assert row["first"] == row["last"] == 0.5
    assert not leaked([p for p in probes if p.kind != "verbatim"], [doc["text"] for doc in dataset.documents])
    # importing the same probes afterwards adds nothing: a probe counts once whoever brought it
    assert import_probes(catalog, "rev", reversal_kb[2])["added"] == 0


def test_probes_of_unchanged_documents_carry_over_to_a_new_snapshot(catalog, reversal_kb):
    dataset, documents_path, probes_path = reversal_kb
    import_probes(catalog, "rev", probes_path)
    kb = get_kb(catalog, "rev")
    first = latest_snapshot(catalog, kb.id)
    records = [json.loads(line) for line in documents_path.read_text().splitlines()]
    changed = records[0]["id"]
    records[0]["text"] += " It was confirmed again last spring."
    write_lines(documents_path, records)
    sync_kb(catalog, "rev")
    second = latest_snapshot(catalog, kb.id)
    assert second.id != first.id
    result = generate_probes(catalog, "rev", names=[])
    testing_changed = [p for p in dataset.probes if changed in p["source_ids"]]
    assert result["carried_over"] == len(dataset.probes) - len(testing_changed) == 14


def test_leakage_check_flags_answers_stated_in_the_documents(catalog, reversal_kb):
    dataset, _, probes_path = reversal_kb
    import_probes(catalog, "rev", probes_path)
    probes = snapshot_probes(catalog, latest_snapshot(catalog, get_kb(catalog, "rev").id).id)
    reversal = next(p for p in probes if p.kind == "reversal")
    stated = f"{reversal.question} {reversal.choices[reversal.answer_index]}."
    texts = [doc["text"] for doc in dataset.documents]
    assert leaked(probes, texts) == set()
    assert leaked(probes, [*texts, "Notes. " + stated.upper()]) == {reversal.id}


def test_pilot_sample_keeps_a_probes_documents_together_and_spans_sources(catalog, reversal_kb):
    from kadapt.pilot import pilot_sample, snapshot_docs

    _, _, probes_path = reversal_kb
    import_probes(catalog, "rev", probes_path)
    snapshot = latest_snapshot(catalog, get_kb(catalog, "rev").id)
    documents = snapshot_docs(catalog, snapshot.id)
    probes = snapshot_probes(catalog, snapshot.id)
    chosen, whole = pilot_sample(documents, probes, 12)
    assert not whole and len(chosen) == 12
    for probe in probes:  # every probe has all of its documents in the sample or none
        inside = {doc_id in chosen for doc_id in probe.source_ids}
        assert len(inside) == 1
    assert pilot_sample(documents, probes, 12) == (chosen, False)  # deterministic
    assert pilot_sample(documents, probes, 100)[1] is True
    orphan = type("P", (), {"source_ids": []})()
    assert pilot_sample(documents, [*probes, orphan], 12)[1] is True


@pytest.mark.slow
def test_questions_generator_writes_balanced_probes_for_any_documents(catalog, kadapt_env, monkeypatch):
    from kadapt.probes import count_probes
    from tests.conftest import REPO, build_handbook, clear_caches

    monkeypatch.setenv("KADAPT_ALLOWED_ROOTS", f'["{kadapt_env}", "{REPO / "samples"}"]')
    clear_caches()
    build_handbook(catalog, get_settings())
    result = generate_probes(catalog, "handbook", names=["questions"])
    probes = snapshot_probes(catalog, result["snapshot"])
    kinds = count_probes(catalog, result["snapshot"])
    assert kinds.get("verbatim", 0) >= 10 and kinds.get("rephrase", 0) >= 1
    for probe in probes:
        answer = probe.choices[probe.answer_index]
        assert answer in probe.provenance["sentence"]
        assert answer.lower() not in probe.question.lower()
        assert len(probe.choices) == len(set(probe.choices)) >= 2
    for kind, row in balance(probes).items():
        counts = list(row["answer_positions"].values())
        assert max(counts) - min(counts) <= 1, (kind, row)
    # a second run has nothing left to do: every document already has its probes
    again = generate_probes(catalog, "handbook", names=["questions"])
    assert again["by_generator"]["questions"]["added"] == 0


def test_questions_generator_gives_model_written_questions_a_chat_form_and_clozes_none():
    from kadapt.augment import SourceDocument
    from kadapt_probes import Candidate, balanced_probes

    def candidate(number: int, term: str) -> Candidate:
        document = SourceDocument(id=f"d{number}", title="", locator=f"d{number}", text="", content_hash="h")
        return Candidate(document, f"The office in town {number} is run by {term}.", term, "name")

    pool = [candidate(1, "Mira Patel"), candidate(2, "Jon Berg"), candidate(3, "Ola Dahl")]
    items = [(pool[0], "Question: Who runs the office in town 1?\nAnswer:", "Who runs the office in town 1?")]
    (rephrase,) = balanced_probes("rephrase", items, pool, 4)
    assert rephrase.chat_question == "Who runs the office in town 1?" and rephrase.answers == ["Mira Patel"]
    (cloze,) = balanced_probes("verbatim", [(pool[0], "The office in town 1 is run by", None)], pool, 4)
    assert cloze.chat_question is None and cloze.answers == []
    # a distractor that reads as the answer once normalised: the judge could not tell them apart, so MC-only
    twin = [pool[0], candidate(2, "mira-patel")]
    (ambiguous,) = balanced_probes("rephrase", items, twin, 4)
    assert ambiguous.chat_question is None and ambiguous.choices == ["Mira Patel", "mira-patel"]
