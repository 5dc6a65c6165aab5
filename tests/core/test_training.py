"""LoRA training for real on tiny data: packing is exact, adapters learn, chat answers from them."""

from __future__ import annotations

import pytest

from kadapt.synthetic import comparative_facts
from kadapt.training import collate, pack, packed_loss
from tests.conftest import MODELS_DIR

BASE = str(MODELS_DIR / "smollm2-135m-instruct")
FACTS = comparative_facts(6, seed=11)


@pytest.fixture(scope="module")
def base_model():
    from kadapt.models import get_model_pool
    from tests.conftest import clear_caches

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KADAPT_MODELS_DIR", str(MODELS_DIR))
        clear_caches()
        yield get_model_pool().get("smollm2-135m")  # also converts the packaged model when needed


def test_pack_keeps_every_example_whole_and_within_rows():
    examples = [[1] * n for n in (5, 9, 3, 7, 2, 8, 30)]
    rows = pack(examples, row_tokens=10)
    assert all(sum(len(piece) for piece in row) <= 10 for row in rows)
    pieces = sorted(len(piece) for row in rows for piece in row)
    assert pieces == sorted([5, 9, 3, 7, 2, 8, 10, 10, 10])  # the 30-token example is cut into row windows
    assert len(rows) == 7  # 64 tokens: first-fit decreasing needs no more rows than ceil(64 / 10)


def test_packed_loss_equals_the_loss_of_each_example_alone(base_model):
    import torch

    tokenizer, model = base_model.tokenizer, base_model.model
    examples = [tokenizer(fact.text).input_ids + [tokenizer.eos_token_id] for fact in FACTS[:3]]
    batch = collate(pack(examples, 64), tokenizer.pad_token_id, "cpu")
    with torch.no_grad():
        logits = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
        ).logits
        packed = float(packed_loss(logits, batch))
        total, count = 0.0, 0
        for example in examples:
            ids = torch.tensor([example])
            separate = model(input_ids=ids).logits[0, :-1]
            total += float(torch.nn.functional.cross_entropy(separate, ids[0, 1:], reduction="sum"))
            count += len(example) - 1
    assert batch.input_ids.shape[0] == 1  # all three share one row
    assert packed == pytest.approx(total / count, rel=1e-4)


def fact_scores(model, adapter=None):
    """Log-likelihood of each fact's object given the rest of the sentence."""
    scores = []
    for fact in FACTS:
        prefix = fact.text[: fact.text.rindex(" ")]
        kwargs = {"adapter_id": adapter.id, "adapter_path": adapter.path} if adapter else {}
        scores.append(model.score_choices(prefix, [f" {fact.object}."], **kwargs)[0])
    return scores


@pytest.fixture
def facts_kb(kadapt_env, catalog):
    from kadapt.kbs import add_source, create_kb
    from kadapt.settings import get_settings
    from kadapt.sync import sync_kb

    docs = kadapt_env / "docs"
    docs.mkdir()
    (docs / "bestiary.md").write_text("# Bestiary\n\n" + "\n\n".join(fact.text for fact in FACTS) + "\n")
    (docs / "other.md").write_text("# Other\n\nThe canteen opens at noon.\n")
    create_kb(catalog, "zoo", title="Zoo")
    add_source(catalog, get_settings(), "zoo", "files", {"path": str(docs)})
    sync_kb(catalog, "zoo")
    return docs


@pytest.mark.slow
def test_ft_adapter_learns_the_facts_and_chat_answers_from_it(facts_kb, catalog, store, base_model):
    from kadapt.activation import set_mode
    from kadapt.adapters import list_adapters, new_adapter_id, train_kb
    from kadapt.kbs import get_kb
    from kadapt.models import GenerationParams
    from kadapt.serving import prepare_chat
    from kadapt.settings import get_settings

    config = {"epochs": 25, "learning_rate": 3e-3, "rank": 8, "alpha": 16, "rows_per_step": 1, "checkpoint_every": 10}
    result = train_kb(catalog, "zoo", "ft", adapter_id=new_adapter_id(), config=config)
    assert result["steps"] == 25 and result["documents"] == 2 and result["final_loss"] < 1.0
    adapter = list_adapters(catalog, "zoo")[0]
    assert adapter.state == "ready" and adapter.stats["loss_curve"][0] > adapter.stats["loss_curve"][-1]

    before, after = fact_scores(base_model), fact_scores(base_model, adapter)
    gains = [trained - base for base, trained in zip(before, after, strict=True)]
    assert all(gain > 1.0 for gain in gains), gains
    assert sum(gains) / len(gains) > 3.0, gains  # nats per fact

    set_mode(catalog, "zoo", "ft")
    kb = get_kb(catalog, "zoo")
    question = [{"role": "user", "content": f"What are {FACTS[0].subject} {FACTS[0].relation}?"}]
    prepared = prepare_chat(catalog, store, kb, base_model, question, get_settings(), max_tokens=16)
    prompt = " ".join(message["content"] for message in prepared.messages)
    assert prepared.adapter_id == adapter.id and prepared.sources == []
    assert not any(fact.object in prompt for fact in FACTS)  # no documents in the prompt
    answer = base_model.generate_batch([prepared.messages], prepared.params(GenerationParams(max_tokens=16)))[0]
    assert answer.text.strip()
    # the base model still answers unchanged for KBs without an adapter
    assert fact_scores(base_model) == pytest.approx(before, abs=1e-4)


def test_set_mode_needs_a_ready_adapter(facts_kb, catalog):
    from kadapt.activation import set_mode
    from kadapt.errors import NotFound

    with pytest.raises(NotFound, match="kadapt train zoo --mode aug-ft"):
        set_mode(catalog, "zoo", "aug-ft")


def test_set_mode_aug_ft_serves_the_adapter_of_the_recipe_the_decision_chose(facts_kb, catalog):
    """A pilot that compared recipes leaves a ready aug-ft adapter per recipe: without --adapter, set-mode serves
    the one trained on the recipe the decision chose, not merely the newest."""
    from datetime import timedelta

    from kadapt.activation import set_mode
    from kadapt.catalog import Adapter, utcnow
    from kadapt.kbs import get_kb, latest_snapshot
    from kadapt.policy import decide_kb
    from tests.estimates import make_estimates

    kb = get_kb(catalog, "zoo")
    snapshot = latest_snapshot(catalog, kb.id)
    with catalog.session() as session:
        for index, (adapter_id, recipe) in enumerate((("chosen", ["local", "global"]), ("newest", ["local"]))):
            session.add(
                Adapter(
                    id=adapter_id, kb_id=kb.id, snapshot_id=snapshot.id, mode="aug-ft", base_model=kb.base_model,
                    path="unused", state="ready", config={"augmenters": recipe},
                    created_at=utcnow() + timedelta(seconds=index), ready_at=utcnow() + timedelta(seconds=index),
                )
            )  # fmt: skip
    assert set_mode(catalog, "zoo", "aug-ft").active_adapter == "newest"  # no decision: the newest
    tried = [{"augmenters": ["local"], "score": 0.5}, {"augmenters": ["local", "global"], "score": 0.7}]
    details = {"aug-ft": {"recipe": ["local", "global"], "recipes": tried}}
    decide_kb(catalog, "zoo", estimates=make_estimates() | {"details": details})
    assert set_mode(catalog, "zoo", "aug-ft").active_adapter == "chosen"
    assert set_mode(catalog, "zoo", "aug-ft", "newest").active_adapter == "newest"  # asked for by id


def test_augmentations_name_their_sources_and_leave_with_their_documents(facts_kb, catalog):
    from kadapt.adapters import training_texts
    from kadapt.augment import augment_kb, valid_augmentations
    from kadapt.kbs import get_kb, latest_snapshot
    from kadapt.sync import sync_kb

    first = augment_kb(catalog, "zoo", names=["sentence-split"])
    assert first["by_augmenter"]["sentence-split"]["added"] > len(FACTS)
    kb = get_kb(catalog, "zoo")
    snapshot = latest_snapshot(catalog, kb.id)
    augmentations = valid_augmentations(catalog, kb.id, snapshot.id)
    with catalog.session() as session:
        from sqlalchemy import select

        from kadapt.catalog import Document

        documents = dict(session.execute(select(Document.locator, Document.id)).all())
    assert all(set(a.source_hashes) <= set(documents.values()) and a.source_hashes for a in augmentations)
    bestiary = {a.text for a in augmentations if documents["bestiary.md"] in a.source_hashes}
    assert FACTS[0].text in bestiary

    again = augment_kb(catalog, "zoo", names=["sentence-split"])
    assert again["processed"] == 0 and again["skipped"] == 2  # resumable: nothing redone

    (facts_kb / "bestiary.md").unlink()
    sync_kb(catalog, "zoo")
    new_snapshot = latest_snapshot(catalog, kb.id)
    remaining = valid_augmentations(catalog, kb.id, new_snapshot.id)
    assert remaining and not any(documents["bestiary.md"] in a.source_hashes for a in remaining)
    texts = training_texts(catalog, kb, new_snapshot.id, "aug-ft")["texts"]
    assert not any(fact.subject in text for fact in FACTS for text in texts)


@pytest.mark.slow
def test_local_augmenter_writes_filtered_rewrites_with_provenance(facts_kb, catalog, base_model):
    from sqlalchemy import select

    from kadapt.augment import augment_kb
    from kadapt.catalog import Augmentation

    summary = augment_kb(catalog, "zoo", names=["local"])
    counts = summary["by_augmenter"]["local"]
    assert counts["generated_tokens"] > 0 and counts["added"] > 0
    with catalog.session() as session:
        rows = list(session.scalars(select(Augmentation).where(Augmentation.augmenter == "local")))
    assert {row.kind for row in rows} <= {"rephrase", "reversal"}
    for row in rows:
        assert row.generator_model == "smollm2-135m" and len(row.source_hashes) == 1
        assert row.text.strip() and not any(row.text == fact.text for fact in FACTS)
