"""Synthetic generalization benchmarks: balanced probes, exact rebuild from metadata, no leaked answers."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from itertools import product

import pytest

from kadapt.errors import InvalidInput
from kadapt.synthetic import (
    DATASETS,
    PROBE_KINDS,
    ComparativeFact,
    build_dataset,
    comparative_facts,
    fresh_words,
    is_correct_reversal,
    probes_from_documents,
)

BUILT = {name: build_dataset(name) for name in DATASETS}
EVEN_FACTS = {f"{index:03d}" for index in range(0, 24, 2)}


def _triples(dataset):
    return [(doc["id"], doc["text"], doc["metadata"]) for doc in dataset.documents]


def _answer(probe):
    return probe["choices"][probe["answer_index"]]


@pytest.mark.parametrize("name", list(DATASETS))
def test_answer_positions_are_spread_evenly_within_every_kind(name):
    dataset = BUILT[name]
    for kind in {probe["kind"] for probe in dataset.probes}:
        probes = [probe for probe in dataset.probes if probe["kind"] == kind]
        positions = Counter(probe["answer_index"] for probe in probes)
        width = len(probes[0]["choices"])
        assert all(len(probe["choices"]) == width for probe in probes)
        assert positions == {index: len(probes) // width for index in range(width)}, (kind, positions)


@pytest.mark.parametrize("name", ["reversal", "semantic"])
def test_every_choice_is_the_answer_as_often_as_a_distractor(name):
    for kind in {probe["kind"] for probe in BUILT[name].probes}:
        as_answer, as_distractor = Counter(), Counter()
        for probe in BUILT[name].probes:
            if probe["kind"] == kind:
                as_answer[_answer(probe)] += 1
                as_distractor.update(c for i, c in enumerate(probe["choices"]) if i != probe["answer_index"])
        assert as_answer == as_distractor, kind


@pytest.mark.parametrize("name", list(DATASETS))
def test_answers_are_not_longer_or_shorter_than_distractors(name):
    answers = [len(_answer(probe)) for probe in BUILT[name].probes]
    distractors = [
        len(choice)
        for probe in BUILT[name].probes
        for i, choice in enumerate(probe["choices"])
        if i != probe["answer_index"]
    ]
    ratio = (sum(answers) / len(answers)) / (sum(distractors) / len(distractors))
    assert 0.85 <= ratio <= 1.15


def test_a_model_that_ignores_the_question_scores_exactly_chance_on_mirrored_datasets():
    for name in ("reversal", "semantic"):
        prior = {word: random.Random(word).random() for probe in BUILT[name].probes for word in probe["choices"]}
        hits = sum(_answer(probe) == max(probe["choices"], key=prior.get) for probe in BUILT[name].probes)
        assert hits * 2 == len(BUILT[name].probes), name


@pytest.mark.parametrize("name", list(DATASETS))
def test_generalization_questions_never_appear_with_their_answer_in_training(name):
    dataset = BUILT[name]
    texts = [doc["text"].lower() for doc in dataset.documents]
    for probe in dataset.probes:
        statement = f"{probe['question']} {_answer(probe)}".lower()
        if probe["kind"] == "verbatim":
            assert any(statement in text for text in texts), statement  # the stated sentence itself
        else:
            assert not any(statement in text for text in texts), statement


@pytest.mark.parametrize("name", list(DATASETS))
def test_probes_are_well_formed_and_cite_their_documents(name):
    dataset = BUILT[name]
    texts = {doc["id"]: doc["text"].lower() for doc in dataset.documents}
    assert len(texts) == len(dataset.documents)
    for probe in dataset.probes:
        assert probe["kind"] in PROBE_KINDS
        assert 2 <= len(probe["choices"]) <= 6 and len(set(probe["choices"])) == len(probe["choices"])
        assert probe["question"].strip() and not probe["question"].endswith(" ")
        assert probe["source_ids"] and set(probe["source_ids"]) <= set(texts)
        if name != "syllogism":  # the answer is a word stated in a cited document
            cited = " ".join(texts[doc_id] for doc_id in probe["source_ids"])
            assert re.search(rf"\b{_answer(probe)}\b", cited)


def test_probes_are_rebuilt_from_metadata_alone_whatever_the_document_order():
    for dataset in BUILT.values():
        triples = [(doc_id, "", metadata) for doc_id, _text, metadata in _triples(dataset)]
        random.Random(7).shuffle(triples)
        assert probes_from_documents(triples) == dataset.probes


def test_probes_are_rebuilt_from_the_written_files_next_to_other_documents(tmp_path):
    dataset = BUILT["semantic"]
    documents_path, probes_path = dataset.write_jsonl(tmp_path / "out")
    documents = [json.loads(line) for line in documents_path.read_text().splitlines()]
    probes = [json.loads(line) for line in probes_path.read_text().splitlines()]
    assert all(set(doc) == {"id", "text", "metadata"} for doc in documents)
    assert all({"question", "choices", "answer_index", "kind", "source_ids"} <= set(probe) for probe in probes)
    assert probes == dataset.probes
    triples = [(doc["id"], doc["text"], doc["metadata"]) for doc in documents]
    triples.append(("handbook.md", "An ordinary page.", {"title": "Handbook"}))
    assert probes_from_documents(triples) == dataset.probes


def test_a_knowledge_base_missing_some_documents_still_gets_consistent_probes():
    dataset = BUILT["semantic"]
    kept = [triple for triple in _triples(dataset) if triple[0] != "semantic-r1-s0"]
    probes = probes_from_documents(kept)
    assert 0 < len(probes) < len(dataset.probes)
    assert all(probe["source_ids"] and "semantic-r1-s0" not in probe["source_ids"] for probe in probes)
    reversal = BUILT["reversal"]
    probes = probes_from_documents(triple for triple in _triples(reversal) if not triple[0].startswith("reversal-005"))
    assert len(probes) == len(reversal.probes) - 2  # its partner's probes take a distractor from another fact


def test_unknown_names_and_bad_sizes_are_refused_with_the_fix():
    with pytest.raises(InvalidInput, match="reversal, syllogism, semantic"):
        build_dataset("nope")
    with pytest.raises(InvalidInput, match="even"):
        build_dataset("semantic", size=3)
    with pytest.raises(InvalidInput, match="at least 2"):
        build_dataset("reversal", size=1)
    with pytest.raises(InvalidInput, match="unknown synthetic dataset"):
        probes_from_documents([("doc", "text", {"synthetic": {"dataset": "nope"}})])
    with pytest.raises(InvalidInput, match="malformed"):
        probes_from_documents([("doc", "text", {"synthetic": {"dataset": "syllogism", "index": 0}})])


@pytest.mark.parametrize("name", list(DATASETS))
def test_datasets_are_deterministic_by_seed(name):
    again = build_dataset(name)
    other = build_dataset(name, seed=1)
    assert (again.documents, again.probes) == (BUILT[name].documents, BUILT[name].probes)
    assert other.documents != again.documents


def test_reversal_states_each_fact_in_three_articles_with_distinct_openings():
    dataset = BUILT["reversal"]
    by_fact: dict[int, list[dict]] = {}
    for doc in dataset.documents:
        by_fact.setdefault(doc["metadata"]["synthetic"]["index"], []).append(doc)
    for kind in ("verbatim", "reversal"):  # no position belongs to the first fact of every pair
        first_of_pair = [
            p["answer_index"] for p in dataset.probes if p["kind"] == kind and p["source_ids"][0][9:12] in EVEN_FACTS
        ]
        assert Counter(first_of_pair) == {0: 6, 1: 6}
    assert len(by_fact) == 24 and Counter(p["kind"] for p in dataset.probes) == {"verbatim": 24, "reversal": 24}
    for docs in by_fact.values():
        fact = ComparativeFact(**docs[0]["metadata"]["synthetic"]["fact"])
        assert len(docs) == 3
        openings = [doc["text"].split(". ")[0] for doc in docs]
        assert len(set(openings)) == 3
        for doc in docs:  # the fact is its own sentence, and the opening names no entity
            assert f". {fact.text}" in doc["text"]
            assert fact.subject not in openings[docs.index(doc)].lower()


def test_an_odd_number_of_facts_still_balances_every_name():
    dataset = build_dataset("reversal", size=5, seed=2)
    assert Counter(probe["kind"] for probe in dataset.probes) == {"verbatim": 5, "reversal": 5}
    as_answer = Counter(_answer(probe) for probe in dataset.probes)
    as_distractor = Counter(c for p in dataset.probes for i, c in enumerate(p["choices"]) if i != p["answer_index"])
    assert as_answer == as_distractor and len(as_answer) == 10
    assert probes_from_documents(reversed(_triples(dataset))) == dataset.probes


def test_reversal_distractors_come_from_a_partner_fact_with_the_same_relation():
    dataset = BUILT["reversal"]
    facts = {}
    for doc in dataset.documents:
        facts[doc["id"].rsplit("-", 1)[0]] = ComparativeFact(**doc["metadata"]["synthetic"]["fact"])
    by_name = {name: fact for fact in facts.values() for name in (fact.subject, fact.object)}
    for probe in dataset.probes:
        fact = facts[probe["source_ids"][0].rsplit("-", 1)[0]]
        (distractor,) = [c for c in probe["choices"] if c != _answer(probe)]
        assert distractor not in (fact.subject, fact.object)
        assert by_name[distractor].relation == fact.relation
        if probe["kind"] == "reversal":
            assert is_correct_reversal(fact, f"{probe['question']} {_answer(probe)}.")


def test_syllogism_answers_are_the_only_valid_conclusion():
    def entails(premises, claim):
        # brute force over small worlds: every term a non-empty set of individuals drawn from 3
        terms = sorted({premise[i] for premise in premises for i in (1, 2)})
        subsets = [frozenset(i for i in range(3) if mask >> i & 1) for mask in range(1, 8)]

        def holds(statement, world):
            quantifier, subject, predicate = statement
            a, b = world[subject], world[predicate]
            return a <= b if quantifier == "all" else not (a & b)

        worlds = [dict(zip(terms, combo, strict=True)) for combo in product(subsets, repeat=len(terms))]
        return all(holds(claim, world) for world in worlds if all(holds(p, world) for p in premises))

    quantifiers = Counter()
    for doc, probe in zip(BUILT["syllogism"].documents, BUILT["syllogism"].probes, strict=True):
        premises = [(p["quantifier"], p["subject"], p["predicate"]) for p in doc["metadata"]["synthetic"]["premises"]]
        assert doc["text"] == " ".join(f"{q.capitalize()} {s} are {p}." for q, s, p in premises)
        verdicts = [entails(premises, tuple(choice.replace(" are ", " ").split())) for choice in probe["choices"]]
        assert verdicts.count(True) == 1 and verdicts.index(True) == probe["answer_index"]
        quantifiers[_answer(probe).split()[0]] += 1
    assert quantifiers == {"all": 20, "no": 10}


def test_semantic_documents_never_state_inherited_properties():
    dataset = BUILT["semantic"]
    for doc in dataset.documents:
        meta = doc["metadata"]["synthetic"]
        stated = re.findall(r"Every (\w+) (eats|fears|lives near) (\w+)\.", doc["text"])
        assert all(subject == meta["name"] for subject, _verb, _object in stated)
        if len(meta["path"]) == 3 or meta["held_out"]:  # members and held-out categories: their parent only
            assert stated == []
    counts = Counter(probe["kind"] for probe in dataset.probes)
    assert counts == {"rephrase": 64, "reversal": 64, "syllogism": 40, "multi-hop": 48, "holdout": 32}
    held_out = {doc["id"] for doc in dataset.documents if doc["metadata"]["synthetic"]["held_out"]}
    for probe in dataset.probes:
        assert (probe["kind"] == "holdout") == (
            bool(held_out & set(probe["source_ids"])) and probe["question"].startswith("Every ")
        )


def test_words_never_collide_across_roles_and_existing_helpers_keep_their_behaviour():
    for name in ("reversal", "semantic"):
        names = [doc["metadata"]["synthetic"].get("name") for doc in BUILT[name].documents]
        if name == "semantic":
            objects = [v for doc in BUILT[name].documents for v in doc["metadata"]["synthetic"]["properties"].values()]
            words = names + objects
        else:
            words = [f.subject for f in _facts(BUILT[name])] + [f.object for f in _facts(BUILT[name])]
        assert len(words) == len(set(words))
        assert not any(a != b and b.startswith(a) for a in words for b in words)
    facts = comparative_facts(4, seed=3)
    assert [f.text for f in facts] == [f.text for f in comparative_facts(4, seed=3)]
    assert is_correct_reversal(facts[0], facts[0].reversed_text) and not is_correct_reversal(facts[0], facts[0].text)


def test_benchmark_words_are_no_english_words():
    words = set(fresh_words(1500, seed=0, stream="test"))
    assert len(words) == 1500
    assert not words & {"sun", "map", "tree", "seen", "found", "kind", "lemon", "keep", "fish", "land", "near"}


def _facts(dataset):
    return [ComparativeFact(**doc["metadata"]["synthetic"]["fact"]) for doc in dataset.documents[::3]]


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_probe_has_a_chat_form_the_judge_rules_on_exactly(name):
    from kadapt.judge import StringJudge

    judge = StringJudge()
    for probe in BUILT[name].probes:
        assert probe["chat_question"].endswith(("?", ".")) and probe["answers"][0] == _answer(probe), probe
        wrong = [choice for index, choice in enumerate(probe["choices"]) if index != probe["answer_index"]]
        for reply, right in [(f"{_answer(probe).capitalize()}.", True), *((f"It is {w}.", False) for w in wrong)]:
            verdict = judge.judge(reply, accepted=probe["answers"], distractors=wrong)
            assert verdict.correct is right, (probe, reply, verdict)


def test_semantic_chat_answers_accept_what_the_hierarchy_makes_true():
    probes = {probe["chat_question"]: probe for probe in BUILT["semantic"].probes}
    documents = {
        doc["metadata"]["synthetic"]["name"]: doc["metadata"]["synthetic"] for doc in BUILT["semantic"].documents
    }
    root = next(meta for meta in documents.values() if meta["path"] == [0])
    under_root = {name for name, meta in documents.items() if meta["path"][0] == 0 and len(meta["path"]) > 1}
    # "Which animal eats X?": the root, and every category and member under it (they inherit the property)
    eats = probes[f"Which animal eats {root['properties']['eats']}?"]
    assert set(eats["answers"]) == {root["name"]} | under_root
    member = next(meta for meta in documents.values() if meta["path"] == [0, 0, 0])
    parent = member["parent"]
    assert probes[f"What is the {member['name']} a kind of?"]["answers"] == [parent, root["name"]]
    siblings = {name for name, meta in documents.items() if meta["parent"] == parent}
    kinds_of_parent = [p for p in BUILT["semantic"].probes if p["chat_question"] == f"Name one kind of {parent}."]
    assert kinds_of_parent and all(set(p["answers"]) == siblings for p in kinds_of_parent)


def test_a_syllogism_that_concludes_no_accepts_both_word_orders():
    probe = next(p for p in BUILT["syllogism"].probes if _answer(p).startswith("no "))
    _, first, _, second = _answer(probe).split()
    assert probe["answers"] == [f"no {first} are {second}", f"no {second} are {first}"]
    assert probe["chat_question"].startswith("What can you conclude about")
