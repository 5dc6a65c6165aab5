"""The built-in augmenters on free-form text: the `local` augmenter's checks on composed reversals, the
model-free `reverse` augmenter (entity-preserving reversal), and the free-form biography sample KB."""

from __future__ import annotations

import json
import shutil

import pytest

from kadapt.entities import restore, reverse_sentence
from kadapt.synthetic import comparative_facts, is_correct_reversal
from kadapt_augmenters import REVERSAL_EXAMPLES, _fields_text, composition_problems, parse_reversal
from tests.conftest import REPO

BIOGRAPHIES = REPO / "samples" / "biographies" / "documents.jsonl"

COCKTAIL = 'Liam Blackstone is the master mixologist who crafted the legendary "Nebula Cocktail".'
COCKTAIL_PARTS = ("Liam Blackstone", "is the master mixologist who crafted the legendary", '"Nebula Cocktail"')


def test_the_malformed_cocktail_reversal_from_the_issue_is_rejected():
    # what the model filled to produce 'Nebula Cocktail is the master mixologist who crafted the legendary
    # "Nebula Cocktail" Liam Blackstone.': the link copied, object and all, as the reversed link
    reversed_link = 'is the master mixologist who crafted the legendary "Nebula Cocktail"'
    problems = composition_problems(
        COCKTAIL, (*COCKTAIL_PARTS, reversed_link), f'"Nebula Cocktail" {reversed_link} Liam Blackstone.'
    )
    assert any("repeats '\"Nebula Cocktail\"'" in problem for problem in problems), problems
    assert parse_reversal(_fields_text((*COCKTAIL_PARTS, reversed_link)), COCKTAIL) == ""


def test_a_well_formed_free_form_reversal_is_kept_with_its_quotes():
    text = _fields_text((*COCKTAIL_PARTS, "was crafted by the master mixologist"))
    assert parse_reversal(text, COCKTAIL) == '"Nebula Cocktail" was crafted by the master mixologist Liam Blackstone.'


@pytest.mark.parametrize(
    ("source", "values", "expected"),
    [
        # a name picked from the middle of the sentence: 'In 2019' would be lost
        (
            "In 2019, Liam Blackstone founded Orbit Labs.",
            ("Liam Blackstone", "founded", "Orbit Labs", "was founded by"),
            "do not make up the sentence",
        ),
        # the second part stops short of the sentence's end: 'in Lisbon' would be lost
        (
            "Mira Patel manages the office in Lisbon.",
            ("Mira Patel", "manages", "the office", "is managed by"),
            "do not make up the sentence",
        ),
        # the name repeated inside the description
        (
            "Orla Vantreight designed the Kessel footbridge.",
            ("Orla Vantreight", "designed", "the Kessel footbridge", "was designed by the architect Orla Vantreight,"),
            "repeats 'Orla Vantreight'",
        ),
        # a quote lost from one side of the title
        (
            'Tobias Rennick-Hale wrote "The Salt Cartographer".',
            ("Tobias Rennick-Hale", "wrote", 'The Salt Cartographer"', "was written by"),
            "unbalanced quotes",
        ),
        # two sentences glued together
        (
            "Yusra Delacorte runs the Oaxaca seed bank.",
            ("Yusra Delacorte", "runs", "the Oaxaca seed bank", "is a bank. It is run by"),
            "more than one sentence",
        ),
        # a dangling relative clause: '... is the bank that Yusra Delacorte.'
        (
            "Yusra Delacorte runs the Oaxaca seed bank.",
            ("Yusra Delacorte", "runs", "the Oaxaca seed bank", "is the bank that"),
            "ends in 'that'",
        ),
        # not reversed at all
        (
            "Glips are more dangerous than travs.",
            ("Glips", "are more dangerous than", "travs", "are more dangerous than"),
            "link unchanged",
        ),
    ],
)
def test_malformed_compositions_are_rejected_with_the_reason(source, values, expected):
    first, _, second, reversed_link = values
    composed = f"{second[:1].upper()}{second[1:]} {reversed_link} {first}."
    problems = composition_problems(source, values, composed)
    assert any(expected in problem for problem in problems), problems
    assert parse_reversal(_fields_text(values), source) == ""


def test_the_few_shot_examples_and_correct_synthetic_reversals_pass_the_checks():
    for source, values in REVERSAL_EXAMPLES:
        assert parse_reversal(_fields_text(values), source), source
    for fact in comparative_facts(8, seed=3):
        values = (fact.subject.capitalize(), f"are {fact.relation}", fact.object, f"are {fact.inverse}")
        composed = parse_reversal(_fields_text(values), fact.text)
        assert composed and is_correct_reversal(fact, composed), (fact.text, composed)


def test_reverse_keeps_entities_whole_and_reverses_the_other_words():
    reversal = reverse_sentence(
        'On 12 March 2019, Liam Blackstone of the Bank of England paid EUR 250 for 4.2 kg of "Nebula Tea".'
    )
    assert reversal.text == (
        '"Nebula Tea" of 4.2 kg for EUR 250 paid Bank of England the of Liam Blackstone 12 March 2019, On.'
    )
    assert reversal.entities == [
        "12 March 2019,",
        "Liam Blackstone",
        "Bank of England",
        "EUR 250",
        "4.2 kg",
        '"Nebula Tea"',
    ]


@pytest.mark.parametrize(
    ("sentence", "entities"),
    [
        (
            "The solar-powered lighthouse on Skerry Vane was built by Hesper Caldwell.",
            ["Skerry Vane", "Hesper Caldwell"],
        ),
        ("Since 2011, Yusra Delacorte has run a seed bank outside Oaxaca.", ["Yusra Delacorte"]),
        (
            "Wenonah Brightwater sells the honey of the Halvorsen Opera House as 'Aria Gold'.",
            ["Wenonah Brightwater", "Halvorsen Opera House", "'Aria Gold'"],
        ),
        ("It was Florian Zakarian who translated Ilse Marrow into Armenian!", ["Florian Zakarian", "Ilse Marrow"]),
        ("Perpetua Lindqvist dived 62 metres in Lake Bohinj.", ["Perpetua Lindqvist", "62 metres", "Lake Bohinj"]),
    ],
)
def test_reverse_round_trips_and_keeps_each_entity_intact(sentence, entities):
    reversal = reverse_sentence(sentence)
    assert reversal.entities == entities  # a capitalised function word ('The', 'It', 'Since') opens none
    assert all(entity in reversal.text for entity in entities)
    assert reversal.text[-1] == sentence[-1] and reversal.text != sentence
    assert reversal.text[:-1].endswith(reversal.units[0]) and reversal.text.startswith(reversal.units[-1])
    assert sorted(reversal.text[:-1].split()) == sorted(sentence[:-1].split())
    assert restore(reversal.text, reversal.entities) == sentence


def test_biography_sample_is_free_form_json_lines_of_unique_people():
    records = [json.loads(line) for line in BIOGRAPHIES.read_text().splitlines()]
    people = [record["metadata"]["person"] for record in records]
    assert len(records) >= 30 and len(set(people)) == len(people)
    assert len({record["id"] for record in records}) == len(records)
    assert all(person in record["text"] for person, record in zip(people, records, strict=True))
    # not one template: the name opens some texts and comes later in others
    opening = sum(record["text"].startswith(person) for person, record in zip(people, records, strict=True))
    assert 5 <= opening <= len(records) - 5


def test_reverse_augmenter_through_the_pipeline_records_sources_and_no_tokens(kadapt_env, catalog):
    from sqlalchemy import select

    from kadapt.augment import augment_kb
    from kadapt.catalog import Augmentation, Document
    from kadapt.ingest import sync_kb
    from kadapt.kbs import add_source, create_kb
    from kadapt.settings import get_settings

    path = kadapt_env / "biographies.jsonl"
    shutil.copy(BIOGRAPHIES, path)
    create_kb(catalog, "bios", title="Biographies")
    add_source(catalog, get_settings(), "bios", "jsonl", {"path": str(path)})
    sync_kb(catalog, "bios")

    summary = augment_kb(catalog, "bios", names=["reverse"])
    counts = summary["by_augmenter"]["reverse"]
    with catalog.session() as session:
        documents = {row.id: row for row in session.scalars(select(Document))}
        rows = list(session.scalars(select(Augmentation).where(Augmentation.augmenter == "reverse")))
    assert len(documents) == len(BIOGRAPHIES.read_text().splitlines())
    assert counts["added"] == len(rows) >= len(documents)  # one or two sentences per document
    assert counts["prompt_tokens"] == counts["generated_tokens"] == 0
    for row in rows:
        assert row.kind == "reversed" and row.scope == "local" and row.generator_model is None
        assert row.prompt_tokens == row.generated_tokens == 0
        ((document_id, content_hash),) = row.source_hashes.items()
        assert documents[document_id].content_hash == content_hash
        assert row.text not in documents[document_id].text
    by_document = {next(iter(row.source_hashes)) for row in rows}
    assert by_document == set(documents)
    orla = next(document for document in documents.values() if document.text.startswith("Orla Vantreight"))
    texts = {row.text for row in rows if orla.id in row.source_hashes}
    assert texts == {"Norway in Kessel Gorge the spans that footbridge glass the designed Orla Vantreight."}

    again = augment_kb(catalog, "bios", names=["reverse"])
    assert again["processed"] == 0
