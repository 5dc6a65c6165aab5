"""The built-in augmenters on free-form text: the `local` augmenter's checks on composed reversals, the
model-free `reverse` augmenter (entity-preserving reversal), and the free-form biography sample KB."""

from __future__ import annotations

import json
import shutil

import pytest

from kadapt.entities import restore, reverse_sentence
from kadapt.synthetic import comparative_facts, is_correct_reversal
from kadapt_augmenters import REVERSAL_EXAMPLES, composition_problems, fields_text, parse_reversal
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
    assert parse_reversal(fields_text((*COCKTAIL_PARTS, reversed_link)), COCKTAIL) == ""


def test_a_well_formed_free_form_reversal_is_kept_with_its_quotes():
    text = fields_text((*COCKTAIL_PARTS, "was crafted by the master mixologist"))
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
    assert parse_reversal(fields_text(values), source) == ""


def test_the_few_shot_examples_and_correct_synthetic_reversals_pass_the_checks():
    for source, values in REVERSAL_EXAMPLES:
        assert parse_reversal(fields_text(values), source), source
    for fact in comparative_facts(8, seed=3):
        values = (fact.subject.capitalize(), f"are {fact.relation}", fact.object, f"are {fact.inverse}")
        composed = parse_reversal(fields_text(values), fact.text)
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
    from kadapt.kbs import add_source, create_kb
    from kadapt.settings import get_settings
    from kadapt.sync import sync_kb

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


# -- global: conclusions chaining premises across documents ----------------------------------------------

# three documents, each premise alone: every conclusion needs two of them
SYLLOGISM_KB = [
    {"id": "glon", "text": "All glon are femp."},
    {"id": "femp", "text": "All femp are zaik."},
    {"id": "zaik", "text": "No zaik are trav."},
]
# what follows, with the documents whose premises it chains ("no femp are trav" says "no trav are femp")
SYLLOGISM_CONCLUSIONS = {
    "all glon are zaik": {"glon", "femp"},
    "no femp are trav": {"femp", "zaik"},
    "no trav are femp": {"femp", "zaik"},
    "no glon are trav": {"glon", "femp", "zaik"},
    "no trav are glon": {"glon", "femp", "zaik"},
}


@pytest.mark.parametrize(
    ("kind", "source", "output", "kept"),
    [
        # what the embedded model wrote for the syllogism set's premises: each says the opposite or a converse
        ("rephrase", "All kaizit are peelesh.", "All kaizit are not peelesh.", False),
        ("reversal", "All zind are krond.", "Krond are not All zind.", False),
        ("reversal", "All zind are krond.", "All krond are zind.", False),
        ("rephrase", "No glaide are zaip.", "No glaide are zaip are not.", False),
        ("rephrase", "Staff may not carry over unused leave.", "Staff can carry over unused leave.", False),
        # the same claim in other words
        ("rephrase", "No glaide are zaip.", "None of the glaide are zaip.", True),
        ("reversal", "No glaide are zaip.", "No zaip are glaide.", True),
        ("rephrase", "All kumo are zoun.", "Every kumo is a zoun.", True),
        ("reversal", "Glips are more dangerous than travs.", "Travs are less dangerous than glips.", True),
        ("rephrase", "All managers are employees.", "A manager is a kind of employee.", True),
        ("rephrase", "Every snoub lives near krof.", "Every snoub resides near krof.", True),
        ("rephrase", "Staff don’t carry over unused leave.", "Staff do not carry over unused leave.", True),
        ("rephrase", "Invoice No. 42 is due on Friday.", "Invoice number 42 is due on Friday.", True),
    ],
)
def test_local_keeps_only_rewrites_that_say_what_the_sentence_says(kind, source, output, kept):
    from kadapt_augmenters import LocalRewrite

    assert LocalRewrite().accept(kind, source, output) is kept


def _premises(*texts):
    from kadapt.statements import parse_statement

    return [parse_statement(text) for text in texts]


@pytest.mark.parametrize(
    "candidate",
    [
        "All zaik are glon.",  # the converse
        "All glon are femp.",  # a premise restated
        "No glon are zaik.",  # the wrong quantifier
        "All glon are trav.",  # terms the premises relate, but not so
        "Glon and zaik are related.",  # no categorical statement at all
    ],
)
def test_a_candidate_that_does_not_chain_the_premises_is_rejected(candidate):
    from kadapt.statements import follows

    premises = _premises("All glon are femp.", "All femp are zaik.", "No zaik are trav.")
    assert follows(candidate, premises) is None
    assert follows("All glon are zaik.", premises) == tuple(premises[:2])


def test_chaining_goes_through_the_semantic_hierarchy_in_two_steps():
    from kadapt.statements import conclusions

    premises = _premises("A tove is a kind of snoub.", "A snoub is a kind of glon.", "Every glon eats plim.")
    found = {conclusion.text for conclusion, _ in conclusions(premises)}
    assert found == {"A tove is a kind of glon.", "Every snoub eats plim.", "Every tove eats plim."}


def _syllogism_kb(kadapt_env, catalog):
    from kadapt.kbs import add_source, create_kb
    from kadapt.settings import get_settings
    from kadapt.sync import sync_kb

    path = kadapt_env / "rules.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in SYLLOGISM_KB))
    create_kb(catalog, "rules", title="Rules")
    add_source(catalog, get_settings(), "rules", "jsonl", {"path": str(path)})
    sync_kb(catalog, "rules")


def _global_rows(catalog):
    from sqlalchemy import select

    from kadapt.catalog import Augmentation, Document

    with catalog.session() as session:
        ids = {row.id: row.locator for row in session.scalars(select(Document))}
        rows = list(session.scalars(select(Augmentation).where(Augmentation.augmenter == "global")))
    return ids, rows


@pytest.mark.slow
def test_global_with_the_real_model_writes_chained_conclusions_and_records_their_documents(kadapt_env, catalog):
    from kadapt.augment import augment_kb

    _syllogism_kb(kadapt_env, catalog)
    summary = augment_kb(catalog, "rules", names=["global"])
    ids, rows = _global_rows(catalog)
    assert summary["by_augmenter"]["global"]["generated_tokens"] > 0
    assert rows, "the model wrote no conclusion that chains two premises"
    for row in rows:
        claim = row.text.lower().rstrip(".")
        assert claim in SYLLOGISM_CONCLUSIONS, row.text  # a true conclusion, not a premise or a converse
        sources = {ids[doc_id].split("#")[-1] for doc_id in row.source_hashes}
        assert sources == SYLLOGISM_CONCLUSIONS[claim], (row.text, sources)
        assert row.kind == "inference" and row.scope == "global" and row.generator_model


def test_a_hub_term_licenses_every_conclusion_up_to_the_limit():
    from kadapt.statements import conclusions

    # 60 kinds of staff and 60 things staff are: 3,600 conclusions, each of one x and one y
    hub = _premises(*[f"All x{i} are staff." for i in range(60)], *[f"All staff are y{i}." for i in range(60)])
    found = conclusions(hub)
    assert len(found) == 3600
    assert {pair[1].predicate for conclusion, pair in found if conclusion.subject == "x7"} == {
        f"y{i}" for i in range(60)
    }
    assert len(conclusions(hub, limit=100)) == 100


def test_chain_caps_a_hubs_conclusions_per_document_and_says_so():
    from types import SimpleNamespace

    from kadapt_augmenters import MAX_CONCLUSIONS, ChainInference

    # 150 "All xN are staff." and 150 "All staff are yN.": 22,500 conclusions, more than the cap of 64 a document
    texts = [f"All x{i} are staff." for i in range(150)] + [f"All staff are y{i}." for i in range(150)]
    documents = [SimpleNamespace(id=f"d{i}", text=text) for i, text in enumerate(texts)]
    context = SimpleNamespace(documents=documents, stats={})
    drafts = list(ChainInference().augment(documents, context))
    written = [draft for draft in drafts if draft.text]
    per_document: dict = {}
    for draft in written:
        per_document[draft.source_ids[0]] = per_document.get(draft.source_ids[0], 0) + 1
        assert draft.text.startswith("All x") and len(draft.source_ids) == 2
    # every x document gets its share, whatever its place in the order the hub's conclusions are derived in
    assert per_document == {f"d{i}": MAX_CONCLUSIONS for i in range(150)}
    assert context.stats["summary"]["chain"]["capped"] == 150
    # every document gets a draft: its conclusions, or an empty one (augmented, nothing to write)
    assert {draft.source_ids[0] for draft in drafts} == {document.id for document in documents}


def test_chain_writes_every_conclusion_with_its_documents_and_no_model(kadapt_env, catalog, monkeypatch):
    from sqlalchemy import select

    from kadapt.adapters import training_texts
    from kadapt.augment import augment_kb
    from kadapt.catalog import Augmentation, Document
    from kadapt.kbs import get_kb, latest_snapshot
    from kadapt.settings import get_settings
    from kadapt.training import ChatExample

    _syllogism_kb(kadapt_env, catalog)
    monkeypatch.setenv("KADAPT_MODELS_DIR", str(kadapt_env / "no-models"))  # loading a model would fail
    summary = augment_kb(catalog, "rules", names=["chain"])
    assert summary["by_augmenter"]["chain"]["generated_tokens"] == 0
    with catalog.session() as session:
        ids = {row.id: row.locator for row in session.scalars(select(Document))}
        rows = list(session.scalars(select(Augmentation).where(Augmentation.augmenter == "chain")))
    found = {}
    for row in rows:
        assert row.kind == "inference" and row.scope == "global" and row.generator_model is None
        found[row.text.lower().rstrip(".")] = {ids[doc_id].split("#")[-1] for doc_id in row.source_hashes}
    # every conclusion, once ("no femp are trav" and "no trav are femp" are one claim), with the documents it chains
    assert len(found) == 3 and all(SYLLOGISM_CONCLUSIONS.get(claim) == sources for claim, sources in found.items())
    assert "all glon are zaik" in found
    # aug-ft is asked about what the conclusions state, ft only about what the documents state
    kb = get_kb(catalog, "rules")
    snapshot = latest_snapshot(catalog, kb.id).id
    settings = get_settings().model_copy(update={"adapt_qa_pairs": True})
    questions = {}
    for mode in ("ft", "aug-ft"):
        texts = training_texts(catalog, kb, snapshot, mode, settings=settings, replay=0)["texts"]
        questions[mode] = {text.question: text.answer for text in texts if isinstance(text, ChatExample)}
    assert questions["aug-ft"]["How are glon and zaik related?"] == "All glon are zaik."
    assert questions["aug-ft"]["How are zaik and glon related?"] == "All glon are zaik."  # both directions
    assert "How are glon and zaik related?" not in questions["ft"]
    assert questions["ft"]["How are glon and femp related?"] == "All glon are femp."


class _ScriptedGenerator:
    """Writes the given conclusions for every premise pair: a stand-in for the generator, so that what the
    augmenter keeps of a wrong conclusion is under test, not what the model happens to write."""

    model_id = "scripted"

    def __init__(self, *conclusions):
        self.conclusions = conclusions
        self.runs = 0

    def generate_batch(self, conversations, params):
        from kadapt.models.base import Completion

        text = self.conclusions[min(self.runs, len(self.conclusions) - 1)]
        self.runs += 1
        return [Completion(f"Conclusion: {text}", "stop", 10, 5) for _ in conversations]


def test_global_keeps_only_conclusions_that_chain_the_premises(kadapt_env, catalog):
    from kadapt.augment import AugmentContext
    from kadapt.settings import get_settings
    from kadapt_augmenters import GlobalInference

    _syllogism_kb(kadapt_env, catalog)
    from kadapt.augment import kb_documents
    from kadapt.kbs import get_kb

    kb = get_kb(catalog, "rules")
    documents = kb_documents(catalog, kb.id)
    generator = _ScriptedGenerator("All zaik are glon.", "All glon are femp.", "All glon are zaik.")
    context = AugmentContext(kb=kb, documents=documents, settings=get_settings(), model_spec="", _model=generator)
    drafts = list(GlobalInference().augment(documents, context))
    kept = {draft.text for draft in drafts if draft.text}
    assert kept == {"All glon are zaik."}  # the converse and the restated premise were written too, and dropped
    # every pair was asked (three runs: greedy and two samples); documents with nothing kept still count their tokens
    assert generator.runs == 3 and sum(draft.prompt_tokens for draft in drafts) == 3 * 10 * 3
