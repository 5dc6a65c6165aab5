"""Context-aware decoding of icl answers (KADAPT_ICL_CONTRAST) through the serving path, judged: on questions
where the embedded model, with the right biography in its prompt, still answers from its own belief ("The answer
is:", a made-up career), the default decoding names the person or fact the documents give.

Real parts: the embedded 135M model, Chroma and SQLite; the 34 people of samples/biographies."""

from __future__ import annotations

from kadapt.kbs import add_source, create_kb, get_kb, latest_snapshot
from kadapt.models import GenerationParams, get_model_pool
from kadapt.probes import import_probes, snapshot_probes
from kadapt.served import serve_probes
from kadapt.serving import prepare_chat
from kadapt.settings import get_settings
from kadapt.store import get_store
from kadapt.sync import sync_kb
from tests.conftest import REPO

BIOGRAPHIES = REPO / "samples" / "biographies"
# questions the plain decoding got wrong on this KB and the default contrast right (bench/served.py, icl)
QUESTIONS = (
    "Who translated the complete letters of the poet Ilse Marrow into Armenian?",
    "Who skates the 200 km canal route between Leeuwarden and Harlingen every winter?",
    "Who catalogued 3,400 species of moss in the Carpathian Mountains?",
    "What is Lysander Kowalczyk-Moreau known for?",
    "What is Marguerite Osei-Bannerman known for?",
)


def test_icl_answers_follow_the_documents_with_context_aware_decoding(catalog, kadapt_env):
    import shutil

    documents = shutil.copy(BIOGRAPHIES / "documents.jsonl", kadapt_env / "documents.jsonl")
    create_kb(catalog, "bio", title="Biographies")
    add_source(catalog, get_settings(), "bio", "jsonl", {"path": str(documents)})
    sync_kb(catalog, "bio")
    import_probes(catalog, "bio", BIOGRAPHIES / "probes.jsonl")
    kb = get_kb(catalog, "bio")
    snapshot_id = latest_snapshot(catalog, kb.id).id
    probes = [probe for probe in snapshot_probes(catalog, snapshot_id) if probe.chat_question in QUESTIONS]
    assert len(probes) == len(QUESTIONS)
    settings, store = get_settings(), get_store(get_settings())
    assert settings.icl_contrast == 0.5  # the weight a pilot tries by default

    def right(contrast: float) -> list[str]:
        evaluation = serve_probes(catalog, store, kb, probes, None, snapshot_id=snapshot_id, icl_contrast=contrast)
        return [answer.answer for answer in evaluation.answers if answer.correct]

    contrasted, plain = right(settings.icl_contrast), right(0.0)
    assert len(contrasted) >= 4, contrasted
    assert len(plain) <= 1, plain

    # a KB serves plain decoding until its pilot finds the contrast better
    model = get_model_pool().get(kb.base_model)
    question = [{"role": "user", "content": QUESTIONS[0]}]
    assert kb.icl_contrast == 0.0
    plain = prepare_chat(catalog, store, kb, model, question, settings, max_tokens=64)
    assert (plain.contrast_messages, plain.params(GenerationParams()).contrast_weight) == ([], 0.0)
    # the contrast prompt is the same chat without the documents
    chat = prepare_chat(catalog, store, kb, model, question, settings, max_tokens=64, icl_contrast=0.5)
    system = chat.messages[0]["content"]
    assert chat.contrast_weight == 0.5 and "Documents:" in system
    assert chat.contrast_messages == [
        {"role": "system", "content": system[: system.index("\n\nDocuments:")]},
        {"role": "user", "content": QUESTIONS[0]},
    ]
    params = chat.params(GenerationParams())
    assert (params.contrast_weight, params.contrast_messages) == (0.5, tuple(chat.contrast_messages))
