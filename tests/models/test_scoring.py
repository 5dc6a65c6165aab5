"""Batched multiple-choice scoring (``score_batch``) gives the scores of ``score_choices``, item by item."""

from __future__ import annotations

import pytest

from kadapt.models import get_model_pool

TOLERANCE = 1e-3  # nats, fp32
DOCUMENTS = (
    "Reference documents:\n\n"
    + "\n".join(
        f"The {name} robot weighs {weight} kilograms and was built in {year}."
        for name, weight, year in [("Atlas", 80, 2013), ("Brisk", 12, 2019), ("Cobalt", 45, 2021), ("Dune", 7, 2016)]
    )
    + "\n\n"
)
ITEMS = [
    ("The capital of France is", [" Paris", " Berlin", " a banana"]),
    ("Glon are more dangerous than", [" femp.", " zimp", " the small grey creatures of the northern hills"]),
    ("Question: which colour is the sky on a clear day?\nAnswer:", [" blue", " green"]),
    (DOCUMENTS + "The Brisk robot weighs", [" 12 kilograms.", " 80 kilograms.", " 45 kilograms.", " 7 kilograms."]),
    (DOCUMENTS + "The Cobalt robot was built in", [" 2021.", " 2013."]),
    ("One choice only:", [" yes"]),
]
# every prompt starts with the documents block: the shared prefix is computed once and its cache reused
SHARED = [
    (DOCUMENTS + f"The {name} robot {question}", choices)
    for name, question, choices in [
        ("Atlas", "weighs", [" 80 kilograms.", " 12 kilograms.", " 7"]),
        ("Dune", "weighs", [" 7 kilograms.", " 45 kilograms."]),
        ("Brisk", "was built in", [" 2019.", " 2016.", " 2013.", " last year"]),
    ]
]


@pytest.fixture(scope="module")
def model():
    import os

    from tests.conftest import MODELS_DIR, clear_caches

    os.environ["KADAPT_MODELS_DIR"] = str(MODELS_DIR)
    clear_caches()
    return get_model_pool().get("smollm2-135m")


@pytest.fixture(scope="module")
def reference(model):
    """score_choices for every item of ITEMS and SHARED."""
    return {prompt: model.score_choices(prompt, choices) for prompt, choices in ITEMS + SHARED}


def assert_close(items, got, reference):
    assert len(got) == len(items)
    for (prompt, choices), scores in zip(items, got, strict=True):
        want = reference[prompt]
        assert len(scores) == len(choices)
        assert max(abs(a - b) for a, b in zip(scores, want, strict=True)) < TOLERANCE, (prompt, scores, want)
        assert scores.index(max(scores)) == want.index(max(want))


def test_packed_items_score_as_they_do_one_by_one(model, reference):
    assert_close(ITEMS, model.score_batch(ITEMS), reference)
    assert_close(SHARED, model.score_batch(SHARED), reference)


def test_row_size_and_forward_batching_do_not_change_scores(model, reference, monkeypatch):
    import kadapt_transformers.engine as engine

    # rows smaller than an item (one item per row), and at most two rows per forward: several forwards
    monkeypatch.setattr(engine, "FORWARD_TOKENS_CPU", 64)
    monkeypatch.setattr(engine, "FORWARD_TOKENS_GPU", 64)
    assert_close(ITEMS, model.score_batch(ITEMS, row_tokens=24), reference)
    assert_close(SHARED, model.score_batch(SHARED, row_tokens=24), reference)


def test_no_items_no_choices_and_empty_choices(model):
    assert model.score_batch([]) == []
    assert model.score_batch([("A prompt with nothing to choose", [])]) == [[]]
    scores = model.score_batch([("Nothing", []), ("The capital of France is", [" Paris", ""])])
    assert scores[0] == [] and scores[1][1] == 0.0
    assert abs(scores[1][0] - model.score_choices("The capital of France is", [" Paris"])[0]) < TOLERANCE
    with pytest.raises(ValueError, match="empty prompt"):
        model.score_batch([("", [" Paris"])])


def test_an_adapter_changes_scores_as_it_does_for_score_choices(model, reference, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model.path, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(tmp_path / "adapter")
    del base
    adapter = {"adapter_id": "random-lora-for-scoring", "adapter_path": str(tmp_path / "adapter")}
    items = ITEMS[:1] + SHARED[:2]
    got = model.score_batch(items, **adapter)
    with_adapter = {prompt: model.score_choices(prompt, choices, **adapter) for prompt, choices in items}
    assert_close(items, got, with_adapter)
    assert (
        max(
            abs(a - b)
            for (prompt, _), row in zip(items, got, strict=True)
            for a, b in zip(row, reference[prompt], strict=True)
        )
        > 0.1
    )
    # and the base model is still what runs without an adapter
    assert_close(items, model.score_batch(items), reference)
