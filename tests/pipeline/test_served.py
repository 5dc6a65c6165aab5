"""Served evaluation: answer probes asked through the serving path of /v1/chat/completions, judged and stored.

Real parts: the embedded model, Chroma and SQLite, the real API route through FastAPI's TestClient."""

from __future__ import annotations

import json
import threading

import pytest

from kadapt.catalog import Adapter, ProbeAnswer, utcnow
from kadapt.errors import InvalidInput
from kadapt.judge import get_judge, judge_probe
from kadapt.kbs import add_source, create_kb, get_kb, latest_snapshot
from kadapt.probes import import_probes, snapshot_probes
from kadapt.served import answer_probes, chat_probes, run_summary
from kadapt.settings import get_settings
from kadapt.sync import sync_kb
from kadapt.synthetic import build_dataset
from tests.conftest import run_kadapt


@pytest.fixture
def reversal_kb(catalog, kadapt_env):
    """The synthetic reversal dataset (8 facts, 24 short articles) with its 16 answer probes imported."""
    dataset = build_dataset("reversal", 8, seed=1)
    documents, probes = dataset.write_jsonl(kadapt_env / "bench")
    create_kb(catalog, "rev", title="Animal facts")
    add_source(catalog, get_settings(), "rev", "jsonl", {"path": str(documents)})
    sync_kb(catalog, "rev")
    import_probes(catalog, "rev", probes)
    return get_kb(catalog, "rev")


class RecordingTokenizer:
    """The backend's tokenizer, unchanged, recording the token ids it gives the generation worker."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self.generated: list[list[int]] = []

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)

    def __call__(self, *args, **kwargs):
        encoded = self._tokenizer(*args, **kwargs)
        if threading.current_thread().name.startswith("kadapt-generate"):  # the batching worker, not token counts
            self.generated.append(list(encoded.input_ids))
        return encoded


@pytest.fixture
def observed(monkeypatch):
    """``observe(model)`` -> (tokenizer recording the prompts' token ids, list of each generated row's params)."""

    def observe(model):
        recording = RecordingTokenizer(model.tokenizer)
        params = []
        prefill = model._prefill

        def recorded(network, requests):  # each batch, and each request that joins one under way
            params.extend(request.params for request in requests)
            return prefill(network, requests)

        monkeypatch.setattr(model, "tokenizer", recording)
        monkeypatch.setattr(model, "_prefill", recorded)
        return recording, params

    return observe


def test_served_answers_are_built_token_for_token_as_the_chat_route_builds_them(
    catalog, store, reversal_kb, observed, monkeypatch
):
    from fastapi.testclient import TestClient

    from kadapt.api import create_app

    monkeypatch.setenv("KADAPT_AUTH_DISABLED", "true")
    get_settings.cache_clear()
    _, (probe,), _ = chat_probes(catalog, reversal_kb, limit=1)
    app = create_app(get_settings())
    with TestClient(app) as client:
        recording, params = observed(app.state.pool.get(reversal_kb.base_model))
        question = {"role": "user", "content": probe.chat_question}
        response = client.post("/v1/chat/completions", json={"model": "rev", "messages": [question]})
        assert response.status_code == 200, response.text
        api_ids, api_params = recording.generated[:], params[:]
        evaluation = answer_probes(catalog, store, "rev", limit=1, pool=app.state.pool)

    assert [item.probe_id for item in evaluation.answers] == [probe.id]
    assert len(api_ids) == 1 and len(recording.generated) == 2
    assert recording.generated[1] == api_ids[0]  # the same prompt, token for token
    assert len(api_ids[0]) > 300  # the whole KB is in it (icl), not the bare question
    assert params[1] == api_params[0]  # the same max_tokens, temperature, top_p, stop, seed and adapter
    assert evaluation.answers[0].answer == response.json()["choices"][0]["message"]["content"]  # greedy: same text
    assert evaluation.answers[0].served_as == response.json()["kadapt"]["mode"] == "icl-whole-kb"


def test_answers_and_verdicts_are_stored_and_summarised_per_kind(catalog, store, reversal_kb, observed):
    from kadapt.models import get_model_pool

    _, params = observed(get_model_pool().get(reversal_kb.base_model))
    progress = []
    evaluation = answer_probes(catalog, store, "rev", limit=4, progress=lambda done, total: progress.append(total))

    assert len(params) == 4 and progress == [4, 4, 4, 4]
    assert {item.kind for item in evaluation.answers} == {"verbatim", "reversal"}  # a limit takes kinds in turn
    assert (evaluation.mode, evaluation.adapter_id, evaluation.judge, evaluation.mc_only) == ("icl", None, "string", 0)
    probes = {probe.id: probe for probe in snapshot_probes(catalog, evaluation.snapshot_id)}
    with catalog.session() as session:
        rows = session.query(ProbeAnswer).filter_by(run_id=evaluation.run_id).order_by(ProbeAnswer.probe_id).all()
    assert [row.probe_id for row in rows] == [item.probe_id for item in evaluation.answers]
    for row in rows:
        verdict = judge_probe(probes[row.probe_id], row.answer, get_judge())
        assert (row.correct, row.reason, row.f1) == (verdict.correct, verdict.reason, verdict.f1)
        assert (row.kb_id, row.mode, row.adapter_id, row.served_as) == (reversal_kb.id, "icl", None, "icl-whole-kb")
        assert row.answer.strip() and row.completion_tokens > 0
    for kind, summary in evaluation.by_kind.items():
        verdicts = [row.correct for row in rows if probes[row.probe_id].kind == kind]
        assert (summary["n"], summary["correct"]) == (len(verdicts), sum(verdicts))
        assert summary["low"] <= summary["accuracy"] <= summary["high"] and summary["high"] - summary["low"] > 0.3
    assert run_summary(catalog, evaluation.run_id) == evaluation.by_kind


def _random_adapter(catalog, kb, model, adapter_id: str, mode: str) -> str:
    """A ready catalog adapter of ``mode`` with freshly initialised LoRA weights (what is served is under test,
    not what it learned)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from kadapt.adapters import adapter_dir

    path = adapter_dir(get_settings(), kb, adapter_id)
    base = AutoModelForCausalLM.from_pretrained(model.path, dtype=torch.float32)
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(path)
    snapshot = latest_snapshot(catalog, kb.id)
    with catalog.session() as session:
        session.add(
            Adapter(
                id=adapter_id,
                kb_id=kb.id,
                snapshot_id=snapshot.id,
                mode=mode,
                base_model=kb.base_model,
                path=str(path),
                state="ready",
                ready_at=utcnow(),
            )
        )
    return str(path)


def test_evaluating_icl_while_the_kb_serves_an_adapter_leaves_the_kb_serving_it(
    catalog, store, reversal_kb, observed, kadapt_env, monkeypatch
):
    from kadapt.activation import set_mode
    from kadapt.models import get_model_pool
    from kadapt.serving import prepare_chat

    # an untrained adapter recognises nothing: routing would give every question to the base model
    monkeypatch.setenv("KADAPT_ADAPTER_ROUTING", "false")
    get_settings.cache_clear()

    model = get_model_pool().get(reversal_kb.base_model)
    _random_adapter(catalog, reversal_kb, model, "lora-for-serving", "ft")
    set_mode(catalog, "rev", "ft")
    recording, params = observed(model)

    evaluation = answer_probes(catalog, store, "rev", mode="icl", limit=1)

    assert (evaluation.mode, evaluation.adapter_id) == ("icl", None)
    assert evaluation.answers[0].served_as == "icl-whole-kb"
    assert [row.adapter_id for row in params] == [None]  # the backend ran the base model alone
    assert "Snand" in model.tokenizer.decode(recording.generated[0])  # with the documents in the prompt
    kb = get_kb(catalog, "rev")
    assert (kb.active_mode, kb.active_adapter) == ("ft", "lora-for-serving")
    question = [{"role": "user", "content": evaluation.answers[0].question}]
    served = prepare_chat(catalog, store, kb, model, question, get_settings(), max_tokens=256)
    assert (served.mode, served.adapter_id) == ("adapter:ft", "lora-for-serving")  # chats still get the adapter
    with pytest.raises(InvalidInput, match="an adapter \\('lora-for-serving'\\) is evaluated in a mode served from an"):
        answer_probes(catalog, store, "rev", mode="icl", adapter_id="lora-for-serving")


def test_a_kb_without_answer_probes_is_told_how_to_get_them(catalog, kadapt_env):
    dataset = build_dataset("reversal", 2, seed=1)
    documents, probes = dataset.write_jsonl(kadapt_env / "bench")
    mc_only = kadapt_env / "mc-only.jsonl"
    chat_form = ("chat_question", "answers")
    lines = [json.loads(line) for line in probes.read_text().splitlines()]
    mc_only.write_text("".join(json.dumps({k: v for k, v in ln.items() if k not in chat_form}) + "\n" for ln in lines))
    create_kb(catalog, "mc")
    add_source(catalog, get_settings(), "mc", "jsonl", {"path": str(documents)})
    sync_kb(catalog, "mc")
    import_probes(catalog, "mc", mc_only)

    result = run_kadapt("probes", "answer", "mc")

    assert result.returncode == 1, result.stderr
    assert "KB 'mc' has no probes with a chat form for its current snapshot (its 4 probes are all MC-only)" in (
        result.stderr
    )
    assert "kadapt probes import mc FILE" in result.stderr
    with pytest.raises(InvalidInput, match="invalid mode 'rag'; use one of active, icl, ft, aug-ft"):
        answer_probes(catalog, None, "mc", mode="rag")


def test_the_floor_is_asked_as_an_adapter_mode_is_without_the_adapter_and_a_folder_adapter_answers(
    catalog, store, reversal_kb, observed, kadapt_env, monkeypatch
):
    """The pilot's floor (NO_CONTEXT) and a sample's adapter (a folder, no catalog row) through serve_probes."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from kadapt.models import get_model_pool
    from kadapt.served import AdapterFolder, serve_probes
    from kadapt.serving import NO_CONTEXT

    monkeypatch.setenv("KADAPT_ADAPTER_ROUTING", "false")  # an untrained adapter recognises nothing (routing)
    get_settings.cache_clear()

    model = get_model_pool().get(reversal_kb.base_model)
    folder = kadapt_env / "pilots" / "sample-ft"
    base = AutoModelForCausalLM.from_pretrained(model.path, dtype=torch.float32)
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(folder)
    snapshot_id, (probe,), _ = chat_probes(catalog, reversal_kb, limit=1)
    recording, params = observed(model)

    floor = serve_probes(catalog, store, reversal_kb, [probe], NO_CONTEXT, snapshot_id=snapshot_id)
    adapter = AdapterFolder("pilot-rev-sample-ft", str(folder), "ft")
    tuned = serve_probes(catalog, store, reversal_kb, [probe], adapter, snapshot_id=snapshot_id)

    assert recording.generated[0] == recording.generated[1]  # the same prompt, token for token
    assert "Snand" not in model.tokenizer.decode(recording.generated[0])  # no documents in it
    assert [(row.adapter_id, row.adapter_path) for row in params] == [(None, None), (adapter.id, str(folder))]
    assert (floor.mode, floor.answers[0].served_as, tuned.mode, tuned.answers[0].served_as) == (
        "floor",
        "no-context",
        "ft",
        "adapter:ft",
    )
    with catalog.session() as session:
        rows = session.query(ProbeAnswer).filter(ProbeAnswer.run_id.in_([floor.run_id, tuned.run_id])).all()
    assert sorted((row.mode, row.adapter_id) for row in rows) == [("floor", None), ("ft", None)]  # a folder: no row
    mc_only = snapshot_probes(catalog, snapshot_id)[0]
    mc_only.chat_question = None
    with pytest.raises(InvalidInput, match="1 of the probes have no chat form"):
        serve_probes(catalog, store, reversal_kb, [mc_only], None, snapshot_id=snapshot_id)


def test_aug_ft_rag_serves_the_aug_ft_adapter_with_the_documents_in_the_prompt(
    catalog, store, reversal_kb, observed, monkeypatch
):
    """aug-ft+rag: the chat route and the served evaluation both apply the aug-ft adapter to icl's prompt."""
    from fastapi.testclient import TestClient

    from kadapt.activation import set_mode
    from kadapt.api import create_app
    from kadapt.errors import NotFound

    with pytest.raises(NotFound, match="has no ready aug-ft adapter"):
        set_mode(catalog, "rev", "aug-ft+rag")  # it serves an aug-ft adapter: there is none yet
    monkeypatch.setenv("KADAPT_AUTH_DISABLED", "true")
    get_settings.cache_clear()
    app = create_app(get_settings())
    _, (probe,), _ = chat_probes(catalog, reversal_kb, limit=1)
    with TestClient(app) as client:
        model = app.state.pool.get(reversal_kb.base_model)
        path = _random_adapter(catalog, reversal_kb, model, "augmented", "aug-ft")
        set_mode(catalog, "rev", "aug-ft+rag")
        recording, params = observed(model)
        question = {"role": "user", "content": probe.chat_question}
        response = client.post("/v1/chat/completions", json={"model": "rev", "messages": [question]})
        assert response.status_code == 200, response.text
        evaluation = answer_probes(catalog, store, "rev", mode="aug-ft+rag", limit=1, pool=app.state.pool)
        active = answer_probes(catalog, store, "rev", limit=1, pool=app.state.pool)

    body = response.json()
    assert (body["kadapt"]["mode"], body["kadapt"]["adapter"]) == ("adapter:aug-ft+rag", "augmented")
    assert body["sources"], "the documents in the prompt are listed"
    assert [(row.adapter_id, row.adapter_path) for row in params] == [("augmented", path)] * 3
    assert "Snand" in model.tokenizer.decode(recording.generated[0])  # the documents are in the prompt
    assert recording.generated[0] == recording.generated[1] == recording.generated[2]  # token for token
    assert (evaluation.mode, evaluation.adapter_id, evaluation.answers[0].served_as) == (
        "aug-ft+rag",
        "augmented",
        "adapter:aug-ft+rag",
    )
    assert active.mode == "aug-ft+rag"  # what the KB serves now
    kb = get_kb(catalog, "rev")
    assert (kb.active_mode, kb.active_adapter) == ("aug-ft+rag", "augmented")


@pytest.mark.parametrize("context_tokens", [4000, 64])  # the whole KB, then retrieved chunks
def test_multiple_choice_scoring_puts_the_served_documents_in_front_of_a_question(
    catalog, store, reversal_kb, kadapt_env, monkeypatch, context_tokens
):
    """The pilot's MC icl prompt holds the documents a chat asking the same question is served with, in the same
    order: one builder (kadapt.serving.icl_context) for both."""
    import re

    from sqlalchemy import select

    from kadapt.catalog import Document
    from kadapt.evaluate import icl_contexts
    from kadapt.models import get_model_pool
    from kadapt.serving import prepare_chat

    monkeypatch.setenv("KADAPT_ICL_CONTEXT_TOKENS", str(context_tokens))
    get_settings.cache_clear()
    settings = get_settings()
    model = get_model_pool().get(reversal_kb.base_model)
    snapshot = latest_snapshot(catalog, reversal_kb.id)
    with catalog.session() as session:
        documents = list(session.scalars(select(Document).where(Document.kb_id == reversal_kb.id)))
    probes = snapshot_probes(catalog, snapshot.id)[:3]
    contexts, how, _ = icl_contexts(probes, documents, model=model, store=store, kb=reversal_kb, settings=settings)
    assert how == ("whole-kb" if context_tokens > 1000 else "retrieval")
    for probe, context in zip(probes, contexts, strict=True):
        messages = [{"role": "user", "content": probe.question}]
        served = prepare_chat(catalog, store, reversal_kb, model, messages, settings, max_tokens=256, adapter=None)
        fences = re.findall(r"\[\d+\] [^\n]*\n<<<\n.*?\n>>>", served.messages[0]["content"], re.S)
        assert fences and "\n\n".join(fences) in context, (probe.question, context[:500])
