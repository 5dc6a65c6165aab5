"""Probes for free-form documents: the hand-written biography ground truth, and the ``reversal`` and
``multi-hop`` generators for arbitrary documents (answers right, distractors false, floors near chance)."""

from __future__ import annotations

import json
from pathlib import Path

from kadapt.augment import SourceDocument
from kadapt.judge import normalise
from kadapt.kbs import add_source, create_kb, get_kb, latest_snapshot
from kadapt.probes import ProbeContext, balance, generate_probes, import_probes, snapshot_probes, validate
from kadapt.settings import get_settings
from kadapt.sync import sync_kb
from kadapt_probes.relations import RelationProbes, answerable, mentions, really_false, reversal_question

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


def _documents(texts: dict[str, str]) -> list[SourceDocument]:
    return [SourceDocument(doc_id, doc_id, doc_id, text, doc_id) for doc_id, text in texts.items()]


def _generate(texts: dict[str, str]) -> list:
    documents = _documents(texts)
    context = ProbeContext(kb=None, documents=documents, settings=None, model_spec="none")
    drafts = list(RelationProbes().generate(documents, context))
    for draft in drafts:
        validate(draft)
    return drafts


FREE_FORM = {
    "orla": "Orla Vantreight designed the glass footbridge over the Kessel Gorge in Norway.",
    # the same fact about someone else: Lena Ortiz may never be a distractor of Orla's question
    "lena": "Together with a partner, Lena Ortiz designed the glass footbridge over the Kessel Gorge.",
    "yusra": "Since 2011, Yusra Delacorte has run a seed bank for heirloom chili peppers outside Oaxaca.",
    "marguerite": "Marguerite Osei-Bannerman, a former jockey, now trains falcons at the Cape Verdant airport.",
    "florian": "It was Florian Zakarian who translated the letters of the poet Ilse Marrow into Armenian.",
    "hesper": "The solar-powered lighthouse on Skerry Vane was built by the engineer Hesper Caldwell.",
    "caspian": "After losing a thumb, mountaineer Caspian Thorley climbed Mount Elvaran in winter.",
    "atlas": "The Atlas scheduler was written by the Kestrel team in 2019.",
    "kestrel": "The Kestrel team sits on the fourth floor of the Oslo office, next to the canteen.",
    "benefits": "Wellbeing\nFree sessions with OpenUp psychologists are booked in the OpenUp app.",
}


def test_reversal_probes_ask_for_the_subject_given_the_rest_with_false_distractors():
    drafts = _generate(FREE_FORM)
    reversals = {draft.source_ids[0]: draft for draft in drafts if draft.kind == "reversal"}
    expected = {  # document -> (the person it names first, the question's start)
        "orla": ("Orla Vantreight", "Who or what designed the glass footbridge over the Kessel Gorge in Norway?"),
        "yusra": ("Yusra Delacorte", "Who or what has run a seed bank"),
        "marguerite": ("Marguerite Osei-Bannerman", "Who or what now trains falcons"),  # apposition skipped
        "florian": ("Florian Zakarian", "Who or what translated the letters"),  # "It was X who …"
        "caspian": ("Caspian Thorley", "Who or what climbed Mount Elvaran in winter?"),  # opening and role word
    }
    for doc_id, (person, question) in expected.items():
        draft = reversals[doc_id]
        assert draft.choices[draft.answer_index] == person and draft.answers == [person]
        assert draft.chat_question.startswith(question) and person not in draft.chat_question
        assert draft.question == f"Question: {draft.chat_question}\nAnswer:"
        wrong = [choice for index, choice in enumerate(draft.choices) if index != draft.answer_index]
        assert len(wrong) == 3 and not any(_contains(FREE_FORM[doc_id], choice) for choice in wrong)
    # Lena states Orla's fact too: never a distractor of it; Orla's question is about Orla's sentence only
    assert "Lena Ortiz" not in reversals["orla"].choices
    assert "Orla Vantreight" not in reversals["lena"].choices
    # the lighthouse sentence names Skerry Vane first, but not as its subject: no question asks for it
    assert "hesper" not in reversals
    # a heading run into a sentence ("Wellbeing⏎Free sessions …") is no name to ask for or offer
    assert all("Wellbeing" not in choice for draft in drafts for choice in draft.choices)


def test_multi_hop_probes_link_two_documents_through_a_shared_entity():
    drafts = [draft for draft in _generate(FREE_FORM) if draft.kind == "multi-hop"]
    assert drafts, "the Atlas and Kestrel documents share 'Kestrel'"
    hop = next(draft for draft in drafts if draft.source_ids == ("atlas", "kestrel"))
    assert hop.choices[hop.answer_index] == "Oslo" and hop.answers == ["Oslo"]
    assert hop.chat_question == (
        '[X] is the name missing from "The Atlas scheduler was written by the [X] team in 2019." '
        'What is [?] in "The [X] team sits on the fourth floor of the [?] office, next to the canteen."?'
    )
    assert hop.provenance["bridge"] == "Kestrel"
    for draft in drafts:  # the answer is in the second document only, the distractors in neither
        first, second = (FREE_FORM[doc_id] for doc_id in draft.source_ids)
        answer = draft.choices[draft.answer_index]
        assert _contains(second, answer) and not _contains(first, answer)
        assert _contains(first, draft.provenance["bridge"]) and _contains(second, draft.provenance["bridge"])
        wrong = [choice for index, choice in enumerate(draft.choices) if index != draft.answer_index]
        assert not any(_contains(first, choice) or _contains(second, choice) for choice in wrong)


def test_the_checks_reject_unanswerable_questions_true_distractors_and_non_subjects():
    source = [FREE_FORM["orla"]]
    question = "Who or what designed the glass footbridge over the Kessel Gorge in Norway?"
    assert answerable(question, "Orla Vantreight", source)
    assert not answerable(question, "Lena Ortiz", source)  # the answer is not in the sources
    assert not answerable("Who or what designed the footbridge of Orla Vantreight?", "Orla Vantreight", source)
    assert not answerable("Who or what painted the red tram depot in Leipzig?", "Orla Vantreight", source)
    sentences = [FREE_FORM[doc_id] for doc_id in ("lena", "yusra", "caspian")]
    assert really_false("Yusra Delacorte", question, source, sentences)
    assert not really_false("Lena Ortiz", question, source, sentences)  # her sentence makes her a right answer
    assert not really_false("Kessel Gorge", question, source, sentences)  # named by the source itself
    assert reversal_question(FREE_FORM["hesper"]) is None  # Skerry Vane is not what was built
    assert reversal_question("Who taught the parrots of Saint Ives Zoo to whistle?") is None
    assert reversal_question("Percival Adeyemi-Larsen, a retired bandmaster.") is None
    # numbers are offered only against numbers of their kind, and a piece of a phone number is none
    found = mentions("The desk opens at 09:00 on the 15th, costs EUR 35 and answers on +31 20 555 0199.")[1]
    assert [(m.text, m.kind) for m in found] == [
        ("09:00", "number:time"),
        ("15th", "number:ordinal"),
        ("EUR 35", "number:amount"),
    ]


def test_relations_generator_on_the_biographies_kb_names_the_right_person(catalog, kadapt_env):
    """Through the catalog, on the 34 free-form biographies: a reversal for every sentence that names its
    person first, each answered by that person (the record's metadata, known apart from the heuristics)."""
    copy = kadapt_env / "biographies.jsonl"
    copy.write_text((BIOGRAPHIES / "documents.jsonl").read_text())
    create_kb(catalog, "bio")
    add_source(catalog, get_settings(), "bio", "jsonl", {"path": str(copy)})
    sync_kb(catalog, "bio")
    summary = generate_probes(catalog, "bio", names=["relations"])
    assert summary["by_generator"]["relations"]["documents"] == 34
    probes = snapshot_probes(catalog, latest_snapshot(catalog, get_kb(catalog, "bio").id).id)
    records = {json.loads(line)["id"]: json.loads(line) for line in copy.open()}
    people = {record["metadata"]["person"] for record in records.values()}
    covered = set()
    for probe in probes:
        assert probe.kind == "reversal" and probe.generator == "relations"
        texts = [record for record in records.values() if probe.provenance["sentence"] in record["text"]]
        (source,) = texts
        answer = probe.choices[probe.answer_index]
        wrong = [choice for index, choice in enumerate(probe.choices) if index != probe.answer_index]
        assert not any(_contains(source["text"], choice) for choice in wrong)
        if probe.chat_question.startswith("Who"):
            person = source["metadata"]["person"]
            assert person in answer and person in probe.answers  # "Composer Anselm Okonkwo-Bright" too
            assert all(any(other in choice for other in people - {person}) for choice in wrong)  # other people
            covered.add(source["id"])
        else:  # "What was started by Nadia Ferreira-Holm in 2003?"
            assert _contains(source["text"], answer) and answer not in people
    assert covered == set(records) - NAME_LAST  # every name-first sentence, and only those, asks for its person
    stats = balance(probes)["reversal"]
    assert max(stats[key] for key in ("first", "last", "shortest", "longest")) <= 0.30
