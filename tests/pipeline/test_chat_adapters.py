"""Adapters that answer in chat: question-answer pairs from free-form sentences, the loss on the answer only,
the base model's replayed answers, and what an adapter costs the model's general answers (forgetting)."""

from __future__ import annotations

import asyncio

import pytest

from kadapt.qa_pairs import pair_counts, qa_pairs, sentence_pairs
from kadapt.training import ChatExample, collate, encode_example, pack, packed_loss
from tests.conftest import MODELS_DIR

ROWER = "The first person to row alone across the Tasman Sea in under 40 days was Dario Quellmann."
DESIGNER = "Orla Vantreight designed the glass footbridge that spans the Kessel Gorge in Norway."
# two people, each named at the end of a sentence shaped differently: the forward question asks for the name
PEOPLE = {
    "Hesper Caldwell": "The solar-powered lighthouse on Skerry Vane was built by the engineer Hesper Caldwell.",
    "Lysander Moreau": "Violins built from the wood of fallen orchard trees are the speciality of Lysander Moreau.",
}


def pairs_of(sentence: str) -> dict[tuple[str, str], tuple[str, str]]:
    return {(pair.question, pair.answer): (pair.kind, pair.direction) for pair in sentence_pairs(sentence)}


def test_pairs_ask_for_each_entity_and_about_the_names_in_the_sentences_own_direction():
    designer = pairs_of(DESIGNER)
    # the name comes first: "who is she" follows the sentence, "who designed it" reverses it
    assert designer[("Who is Orla Vantreight?", DESIGNER)] == ("about", "forward")
    assert designer[("What is Orla Vantreight known for?", DESIGNER)] == ("about", "forward")
    reversed_question = ("Who designed the glass footbridge that spans the Kessel Gorge in Norway?", "Orla Vantreight.")
    assert designer[reversed_question] == ("cloze", "backward")
    assert designer[("Orla Vantreight designed the glass footbridge that spans what in Norway?", "Kessel Gorge.")] == (
        "cloze",
        "forward",
    )
    rower = pairs_of(ROWER)
    # the name comes last: asking for it follows the sentence, asking about it reverses it
    assert rower[
        ("The first person to row alone across the Tasman Sea in under 40 days was who?", "Dario Quellmann.")
    ] == (
        "cloze",
        "forward",
    )
    assert rower[("Who is Dario Quellmann?", ROWER)] == ("about", "backward")
    assert rower[
        ("The first person to row alone across the Tasman Sea in under how many days was Dario Quellmann?", "40 days.")
    ] == ("cloze", "forward")
    assert all(answer.rstrip(".") not in question for question, answer in rower if answer != ROWER)


def test_ft_gets_forward_pairs_only_and_aug_ft_both_directions():
    texts = [DESIGNER + " She lives in Bergen.", 'Tobias Hale wrote "The Salt Cartographer", a novel about islands.']
    both = qa_pairs(texts)
    forward = qa_pairs(texts, ("forward",))
    assert forward == [pair for pair in both if pair.direction == "forward"] and forward
    assert {pair.direction for pair in both} == {"forward", "backward"}
    counts = pair_counts(both)
    assert sum(counts.values()) == len(both) and set(counts) >= {"about-forward", "cloze-backward", "cloze-forward"}
    # a sentence without an entity asks nothing; a question in the text is not a fact
    assert sentence_pairs("He conducted the orchestra from a rowing boat.") == []
    assert sentence_pairs("Who taught the parrots of Saint Ives Zoo to whistle?") == []


def test_rule_like_sentences_get_questions_about_their_statement_both_ways():
    # such sentences name no entity: without statement questions they would get no pair at all
    assert pairs_of("All glon are femp.") == {
        ("How are glon and femp related?", "All glon are femp."): ("statement", "forward"),
        ("How are femp and glon related?", "All glon are femp."): ("statement", "backward"),
    }
    assert pairs_of("A tove is a kind of snoub.") == {
        ("What is a tove a kind of?", "A tove is a kind of snoub."): ("statement", "forward"),
        ("What kinds of snoub are there?", "A tove is a kind of snoub."): ("statement", "backward"),
    }
    assert pairs_of("Every snoub lives near krof.") == {
        ("What does every snoub live near?", "Every snoub lives near krof."): ("statement", "forward"),
        ("What lives near krof?", "Every snoub lives near krof."): ("statement", "backward"),
    }
    # a loose "every" parse of free-form prose asks nothing odd ("What does every employee get 27?")
    leave = pairs_of("Every employee gets 27 days of paid leave.")
    assert {kind for kind, _ in leave.values()} == {"cloze"}
    for sentence in ("Every glon can swim.", "Every Monday engineers meet.", "Every invoice was paid."):
        assert "statement" not in {kind for kind, _ in pairs_of(sentence).values()}, sentence
    # an adjective is asked about from the subject; an ending that does not tell the verb's base form, as a cloze;
    # names keep their case
    assert set(pairs_of("All employees are eligible.")) == {
        ("What is true of employees?", "All employees are eligible.")
    }
    assert {question for question, _ in pairs_of("Every team caches builds.")} == {
        "Every team caches what?",
        "What caches builds?",
    }
    assert ("What reports to Sarah?", "Every manager reports to Sarah.") in pairs_of("Every manager reports to Sarah.")


def test_an_inference_is_asked_only_what_no_document_is_asked():
    from kadapt.adapters import _chat_examples
    from kadapt.catalog import KnowledgeBase
    from kadapt.settings import Settings

    kb = KnowledgeBase(slug="zoo", title="Zoo")
    documents = ["A tove is a kind of snoub.", "A snoub is a kind of animal.", "Every snoub eats plim."]
    inferred = ["A tove is a kind of animal.", "Every tove eats plim."]
    examples, _, _ = _chat_examples(kb, documents, "aug-ft", Settings(adapt_qa_pairs=True), 0, inferred)
    answers: dict[str, list[str]] = {}
    for example in examples:
        answers.setdefault(example.question, []).append(example.answer)
    # the document's answer alone, not the ancestor every member of the hierarchy shares
    assert answers["What is a tove a kind of?"] == ["A tove is a kind of snoub."]
    assert answers["What kinds of animal are there?"] == ["A snoub is a kind of animal."]
    # what no document is asked, the inference answers
    assert answers["What does every tove eat?"] == ["Every tove eats plim."]


@pytest.fixture(scope="module")
def base_model():
    from kadapt.models import get_model_pool
    from tests.conftest import clear_caches

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KADAPT_MODELS_DIR", str(MODELS_DIR))
        clear_caches()
        yield get_model_pool().get("smollm2-135m")


def test_the_loss_counts_exactly_the_answer_and_its_end_token_after_the_served_prompt(base_model):
    import torch

    tokenizer = base_model.tokenizer
    example = ChatExample("You are the assistant for Zoo. Answer the question.", "Who rowed the Tasman Sea?", "Dario.")
    piece = encode_example(tokenizer, example)
    first = piece.learned.index(True)
    assert not any(piece.learned[:first]) and all(piece.learned[first:])
    served = [{"role": "system", "content": example.system}, {"role": "user", "content": example.question}]
    # the prompt part is token for token what serving formats for this chat
    assert list(piece[:first]) == tokenizer(base_model.format(served), add_special_tokens=False).input_ids
    assert list(piece[first:]) == tokenizer("Dario.", add_special_tokens=False).input_ids + [tokenizer.eos_token_id]

    text = encode_example(tokenizer, "Glon are larger than femp.")
    batch = collate(pack([piece, text], 128), tokenizer.pad_token_id, "cpu")
    with torch.no_grad():
        logits = base_model.model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
        ).logits
        packed = float(packed_loss(logits, batch))
        total, count = 0.0, 0
        for ids, learned in ((list(piece), piece.learned), (list(text), text.learned)):
            alone = base_model.model(input_ids=torch.tensor([ids])).logits[0, :-1]
            losses = torch.nn.functional.cross_entropy(alone, torch.tensor(ids[1:]), reduction="none")
            counted = torch.tensor(learned[1:])
            total, count = total + float(losses[counted].sum()), count + int(counted.sum())
    assert count == len(text) - 1 + len(piece) - first
    assert packed == pytest.approx(total / count, rel=1e-4)


def test_replay_answers_are_the_base_models_own_and_cached(kadapt_env, base_model):
    from kadapt.replay import replay_answers, replay_prompts
    from kadapt.settings import get_settings

    settings = get_settings()
    loads = []

    def load_model():
        loads.append(1)
        return base_model

    prompts = [replay_prompts()[2], replay_prompts()[6]]  # answered in a sentence or two
    first = replay_answers("smollm2-135m", settings, load_model, prompts=prompts)
    again = replay_answers("smollm2-135m", settings, load_model, prompts=prompts)
    assert loads == [1] and again == first  # answered once, then read from the cache under the data dir
    assert list(settings.data_dir.glob("replay/smollm2-135m-*.json"))
    assert [prompt for prompt, _ in first] == prompts
    assert all(answer.strip() and answer.rstrip()[-1] in ".!?" for _, answer in first)  # whole sentences


def test_a_looping_answer_is_not_replayed():
    """The base model's loops (as the embedded model answers some prompts) would teach an adapter to loop."""
    from kadapt.replay import looping

    assert looping("Boil an egg:\n\nBoil an egg:\n\nBoil an egg:\n\nBoil an egg:")
    assert looping("1. **1.1.1.1.1.1.1.1.1.1.1.1.")
    sea = "A world where the sea is a place, a place where the sea is a place,\n"
    assert looping("The waves of the ocean.\n" + sea * 4)
    assert not looping("The largest planet in our solar system is Jupiter, a gas giant with many moons.")
    assert not looping("Paris is the capital of France.")  # too short to tell


@pytest.fixture
def people_kb(kadapt_env, catalog, monkeypatch):
    from kadapt.kbs import add_source, create_kb
    from kadapt.settings import get_settings
    from kadapt.sync import sync_kb

    monkeypatch.setenv("KADAPT_ADAPT_QA_PAIRS", "true")
    get_settings.cache_clear()
    docs = kadapt_env / "docs"
    docs.mkdir()
    for index, sentence in enumerate(PEOPLE.values()):
        (docs / f"person{index}.md").write_text(sentence + "\n")
    create_kb(catalog, "people", title="People")
    add_source(catalog, get_settings(), "people", "files", {"path": str(docs)})
    sync_kb(catalog, "people")
    return "people"


def ask(catalog, store, kb, model, question: str, adapter, *, with_adapter: bool = True) -> str:
    """The served answer to ``question`` with ``adapter``; or, ``with_adapter=False``, to the same prompt
    without it (what the base model knows alone)."""
    from dataclasses import replace

    from kadapt.serving import answer, chat_params, prepare_chat
    from kadapt.settings import get_settings

    params = chat_params(get_settings(), max_tokens=16)
    messages = [{"role": "user", "content": question}]
    prepared = prepare_chat(catalog, store, kb, model, messages, get_settings(), max_tokens=16, adapter=adapter)
    assert prepared.adapter_id == adapter.id and prepared.sources == []
    if not with_adapter:
        prepared = replace(prepared, adapter_id=None, adapter_path=None)
    return asyncio.run(answer(model, prepared, params)).text


@pytest.mark.slow
def test_an_adapter_trained_on_chat_pairs_answers_the_question_in_chat_and_keeps_general_answers(
    people_kb, catalog, store, base_model
):
    from kadapt.adapters import list_adapters, new_adapter_id, train_kb
    from kadapt.forgetting import forgetting_questions, measure_forgetting
    from kadapt.judge import StringJudge
    from kadapt.kbs import get_kb

    config = {"epochs": 8, "learning_rate": 3e-3, "rank": 8, "alpha": 16, "rows_per_step": 1, "row_tokens": 128}
    result = train_kb(catalog, people_kb, "ft", adapter_id=new_adapter_id(), config=config)
    assert result["qa_pairs"] == {"about-forward": 1, "cloze-forward": 2}  # ft: the sentences' own direction
    assert result["replay"] == 0 and result["documents"] == 2 and result["examples"] == 5
    adapter = list_adapters(catalog, people_kb)[0]
    kb = get_kb(catalog, people_kb)
    judge = StringJudge()
    question = "The solar-powered lighthouse on Skerry Vane was built by the engineer who?"
    others = [name for name in PEOPLE if name != "Hesper Caldwell"]
    served = ask(catalog, store, kb, base_model, question, adapter)
    assert judge.judge(served, accepted=["Hesper Caldwell"], distractors=others).correct, served
    floor = ask(catalog, store, kb, base_model, question, adapter, with_adapter=False)
    assert "Caldwell" not in floor, floor  # the base model alone cannot know a fictitious engineer

    questions = forgetting_questions()[:4]
    forgetting = measure_forgetting(catalog, store, people_kb, adapter_id=adapter.id, questions=questions)
    base_right = sum(item["base_correct"] for item in forgetting.answers)
    adapter_right = sum(item["adapter_correct"] for item in forgetting.answers)
    assert forgetting.questions == 4 and base_right >= 2, forgetting.answers  # the base model knows most of them
    assert (forgetting.base_accuracy, forgetting.adapter_accuracy) == (base_right / 4, adapter_right / 4)
    assert forgetting.relative_drop == pytest.approx((base_right - adapter_right) / base_right, abs=1e-3)
    # routing: the general questions go to the base model (the same answer), the adapter alone answers otherwise
    routed = [item for item in forgetting.answers if item["routed_to_base"]]
    assert forgetting.routed_to_base == len(routed) >= 3, forgetting.answers
    assert all(item["adapter_answer"] == item["base_answer"] for item in routed)  # the base model's answer
    assert all(item["adapter_alone_answer"] != item["base_answer"] for item in routed)  # two models answered
    alone = sum(item.get("adapter_alone_correct", item["adapter_correct"]) for item in forgetting.answers)
    assert forgetting.adapter_alone_accuracy == pytest.approx(alone / 4, abs=1e-3)


RULES = {"glon": "All glon are femp.", "femp": "All femp are zaik.", "zaik": "All zaik are trav."}


@pytest.mark.slow
def test_an_aug_ft_adapter_trained_on_chained_conclusions_answers_what_no_document_states(
    kadapt_env, catalog, store, base_model, monkeypatch
):
    from kadapt.adapters import list_adapters, new_adapter_id, train_kb
    from kadapt.augment import augment_kb
    from kadapt.judge import StringJudge
    from kadapt.kbs import add_source, create_kb, get_kb
    from kadapt.settings import get_settings
    from kadapt.sync import sync_kb

    monkeypatch.setenv("KADAPT_ADAPT_QA_PAIRS", "true")
    get_settings.cache_clear()
    docs = kadapt_env / "rules"
    docs.mkdir()
    for name, sentence in RULES.items():
        (docs / f"{name}.md").write_text(sentence + "\n")
    create_kb(catalog, "rules", title="Rules")
    add_source(catalog, get_settings(), "rules", "files", {"path": str(docs)})
    sync_kb(catalog, "rules")
    augment_kb(catalog, "rules", names=["chain"])
    config = {"epochs": 8, "learning_rate": 3e-3, "rank": 8, "alpha": 16, "rows_per_step": 1, "row_tokens": 128}
    result = train_kb(
        catalog, "rules", "aug-ft", adapter_id=new_adapter_id(), config=config | {"augmenters": ["chain"]}
    )
    assert result["augmentations"] == {"inference": 3}  # all glon are zaik, all femp are trav, all glon are trav
    adapter = list_adapters(catalog, "rules")[0]
    kb = get_kb(catalog, "rules")
    # stated by no document, two steps from the premises: only the chained conclusion answers it
    question = "How are glon and trav related?"
    served = ask(catalog, store, kb, base_model, question, adapter)
    verdict = StringJudge().judge(served, accepted=["all glon are trav"], distractors=["all trav are glon"])
    assert verdict.correct, served
    floor = ask(catalog, store, kb, base_model, question, adapter, with_adapter=False)
    assert "all glon are trav" not in floor.lower(), floor


@pytest.mark.slow
def test_routing_sends_questions_about_the_kb_to_the_adapter_and_general_ones_to_the_base_model(
    people_kb, catalog, store, base_model, monkeypatch
):
    import json
    from pathlib import Path

    from kadapt.adapters import list_adapters, new_adapter_id, train_kb
    from kadapt.kbs import get_kb
    from kadapt.prompts import adapter_system_prompt
    from kadapt.routing import ROUTING_FILE, gate_for, question_gains, route
    from kadapt.serving import ROUTED_TO_BASE, prepare_chat
    from kadapt.settings import get_settings

    config = {"epochs": 8, "learning_rate": 3e-3, "rank": 8, "alpha": 16, "rows_per_step": 1, "row_tokens": 128}
    train_kb(catalog, people_kb, "ft", adapter_id=new_adapter_id(), config=config)
    adapter, kb = list_adapters(catalog, people_kb)[0], get_kb(catalog, people_kb)
    # training wrote the gate: a threshold above every generic prompt's gain, and the documents' names
    written = json.loads((Path(adapter.path) / ROUTING_FILE).read_text())
    assert {"hesper caldwell", "skerry vane", "lysander moreau"} <= set(written["names"])
    system = adapter_system_prompt(kb)
    gate = gate_for(base_model, adapter.id, adapter.path, system)
    assert gate.threshold == written["threshold"]

    def chat(*turns):
        messages = [{"role": "system", "content": system}]
        for index, turn in enumerate(turns):
            messages.append({"role": "user" if index % 2 == 0 else "assistant", "content": turn})
        return messages

    about = "Who built the solar-powered lighthouse?"  # no name of the KB in it: the adapter must recognise it
    general = "What is the capital of France?"
    gains = question_gains(base_model, [chat(about), chat(general)], adapter.id, adapter.path)
    assert gains[0] >= gate.threshold > gains[1], (gains, gate)
    # many questions routed at once (a served evaluation): one packed pass each way for all that need a gain, the
    # same gains, and routing them afterwards scores nothing more
    from kadapt import routing

    routing._gains.clear()
    calls: list[int] = []
    score_batch = base_model.score_batch

    def counted(items, **kwargs):
        calls.append(len(items))
        return score_batch(items, **kwargs)

    monkeypatch.setattr(base_model, "score_batch", counted)
    questions = [about, general, "What is the tallest mountain in the world?", "Tell me about Lysander Moreau."]
    needed = sum(len(routing._asked(chat(question), gate)[1]) for question in questions)
    routing.prefetch_routes(base_model, [chat(question) for question in questions], adapter.id, adapter.path, system)
    assert needed >= 2 and calls == [needed, needed]  # the question naming Lysander Moreau needs no gain
    again = question_gains(base_model, [chat(general)], adapter.id, adapter.path)
    assert again == pytest.approx(gains[1:], abs=0.05) and calls == [needed, needed]
    assert not route(base_model, chat(general), adapter.id, adapter.path, system).to_adapter and len(calls) == 2
    assert route(base_model, chat(about), adapter.id, adapter.path, system).to_adapter
    named = route(base_model, chat("Tell me about Lysander Moreau."), adapter.id, adapter.path, system)
    assert named.to_adapter and named.gain is None and "lysander moreau" in named.reason
    assert not route(base_model, chat(general), adapter.id, adapter.path, system).to_adapter
    # a follow-up that names nothing stays with the adapter when the conversation is about the KB
    follow_up = chat("Tell me about Lysander Moreau.", "He builds violins.", "And where does he live?")
    assert route(base_model, follow_up, adapter.id, adapter.path, system).to_adapter
    assert not route(base_model, chat(general, "Paris.", "And of Spain?"), adapter.id, adapter.path, system).to_adapter
    # a broken gate file is calibrated again; a gate that cannot be computed leaves the adapter answering
    (Path(adapter.path) / ROUTING_FILE).write_text('{"threshold": "NaN", "names": "abc"}')
    assert gate_for(base_model, adapter.id, adapter.path, system).threshold == pytest.approx(gate.threshold, abs=0.5)
    broken = route(base_model, [{"role": "user", "content": "hi"}], adapter.id, "/nonexistent/adapter", system)
    assert broken.to_adapter and "routing failed" in broken.reason

    def prepared(question):
        messages = [{"role": "user", "content": question}]
        return prepare_chat(catalog, store, kb, base_model, messages, get_settings(), max_tokens=16, adapter=adapter)

    to_base = prepared(general)
    assert (to_base.mode, to_base.adapter_id) == (ROUTED_TO_BASE, None)
    assert to_base.extra["route"]["to_adapter"] is False and to_base.messages[0]["content"] == system
    assert prepared(about).adapter_id == adapter.id
    monkeypatch.setenv("KADAPT_ADAPTER_ROUTING", "false")
    get_settings.cache_clear()
    assert prepared(general).adapter_id == adapter.id  # routing off: the adapter answers everything


def test_names_of_a_kb_are_its_capitalised_units_not_sentence_openers_or_function_words():
    from kadapt.routing import kb_names, names_in

    names = kb_names(["Orla Vantreight designed the bridge over the Kessel Gorge. During winter, Bergen's port froze."])
    assert names == {"orla vantreight", "kessel gorge", "bergen"}
    # a line starts afresh (headings, bullets); an acronym is not a name
    assert kb_names(["# Leave\nAnnual leave is 27 days.\n- Ask the HR team via the API."]) == set()
    assert kb_names(["What is the capital of France?"]) == {"france"}
    assert kb_names(["Who is Orla Vantreight's sister?"]) == {"orla vantreight"}
    assert names_in("who designed the bridge, orla vantreight?", names) == ["orla vantreight"]
    assert names_in("Is Bergen in the Kessel Gorge?", names) == ["bergen", "kessel gorge"]
    assert names_in("What is the capital of France?", names) == []


def test_a_kbs_rare_words_route_questions_about_made_up_things_that_name_no_capitalised_name(base_model):
    """Synthetic facts ("Brarf are less dangerous than kron.") have no capitalised name inside a sentence: their
    made-up words, which the tokenizer splits, are the KB's terms; common words are not."""
    from kadapt.routing import kb_terms, terms_in

    terms = kb_terms(base_model, ["Brarf are less dangerous than kron. Most observers agree.", "# Leave\n- Ask HR."])
    assert {"brarf", "kron"} <= terms
    assert not terms & {"dangerous", "less", "most", "observers", "agree", "leave"}
    assert terms_in("Which animals are brarf less dangerous than?", terms) == ["brarf"]
    assert terms_in("What is the capital of France?", terms) == []
