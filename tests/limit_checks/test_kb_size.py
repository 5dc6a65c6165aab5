"""KADAPT_MAX_KB_TOKENS_FT / _AUG_FT: a KB over a mode's limit is refused where that mode's work starts
(CLI, API, job), named as not eligible in decisions, and left out of the pilot; KADAPT_MAX_KB_DOCUMENTS caps
what a sync adds. Every refusal names the KB's size, the limit and the setting, and leaves nothing behind."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import func, select

from kadapt.catalog import Adapter, Augmentation, Job
from kadapt.errors import KBTooLarge
from kadapt.kbs import add_source, create_kb, get_kb, latest_snapshot
from kadapt.sync import sync_kb
from tests.conftest import MODELS_DIR, run_kadapt
from tests.estimates import make_estimates
from tests.limit_checks.rows import documents_of, errors_of

FACTS = [
    "Vorlim is the mentor of Tessaly.",
    "Quenbrook supplies Marrowick with grain every autumn.",
    "Ildrane is the capital of Soverai.",
    "Pellacore designed the Ostrun bridge in the year of the long frost.",
    "Brannoch owns Kestwell Farms and the mill beside it.",
]


@pytest.fixture
def kb(catalog, kadapt_env):
    """A synced KB of five short documents; returns (slug, its size in tokens)."""
    from kadapt.kb_limits import kb_tokens
    from kadapt.settings import get_settings

    root = kadapt_env / "facts"
    root.mkdir()
    for index, fact in enumerate(FACTS):
        (root / f"fact-{index}.md").write_text(fact + "\n")
    create_kb(catalog, "facts")
    add_source(catalog, get_settings(), "facts", "files", {"path": str(root)})
    sync_kb(catalog, "facts")
    row = get_kb(catalog, "facts")
    return "facts", kb_tokens(catalog, row, latest_snapshot(catalog, row.id))


def refusal(tokens: int, limit: int, mode: str) -> str:
    setting = {"ft": "KADAPT_MAX_KB_TOKENS_FT", "aug-ft": "KADAPT_MAX_KB_TOKENS_AUG_FT"}[mode]
    return (
        f"KB 'facts' has {tokens:,} tokens, over the {limit:,} that {mode} accepts ({setting}); "
        "raise the setting, remove documents, or serve the KB in icl"
    )


def rows(catalog, table) -> int:
    with catalog.session() as session:
        return session.scalar(select(func.count()).select_from(table))


def test_a_kb_is_measured_in_its_models_tokens_and_a_kb_at_the_limit_is_accepted(catalog, kb, limits):
    from transformers import AutoTokenizer

    from kadapt.kb_limits import mode_problems

    slug, tokens = kb
    tokenizer = AutoTokenizer.from_pretrained(MODELS_DIR / "smollm2-135m-instruct")
    assert tokens == sum(len(tokenizer(fact, add_special_tokens=False).input_ids) for fact in FACTS)
    limits(max_kb_tokens_ft=tokens, max_kb_tokens_aug_ft=tokens - 1)
    assert mode_problems(catalog, get_kb(catalog, slug), ["icl", "ft", "aug-ft"]) == {
        "aug-ft": refusal(tokens, tokens - 1, "aug-ft")
    }


def test_the_cli_refuses_training_over_the_limit_in_one_line_before_any_job(catalog, kb, limits, kadapt_env):
    slug, tokens = kb
    limits(max_kb_tokens_ft=tokens - 1)

    result = run_kadapt("train", slug, "--mode", "ft", env=dict(os.environ))

    assert result.returncode == 1
    assert result.stderr.strip() == "error: " + refusal(tokens, tokens - 1, "ft")
    assert rows(catalog, Job) == rows(catalog, Adapter) == 0
    assert not (kadapt_env / "data" / "adapters").exists()


def test_the_api_answers_413_for_training_and_augmentation_over_the_limit(catalog, kb, limits):
    from fastapi.testclient import TestClient

    from kadapt.api import create_app
    from kadapt.settings import get_settings

    slug, tokens = kb
    limits(max_kb_tokens_ft=tokens - 1, max_kb_tokens_aug_ft=tokens - 2, auth_disabled="true")
    with TestClient(create_app(get_settings()), raise_server_exceptions=False) as client:
        train = client.post(f"/v1/kbs/{slug}/train", json={"mode": "ft", "epochs": 1})
        augment = client.post(f"/v1/kbs/{slug}/augment", json={"augmenters": ["sentence-split"]})

    assert train.status_code == 413, train.text
    assert train.json()["error"] | {"param": None} == {
        "message": refusal(tokens, tokens - 1, "ft"),
        "type": "invalid_request_error",
        "param": None,
        "code": "kb_too_large",
    }
    assert augment.status_code == 413, augment.text
    assert augment.json()["error"]["message"] == refusal(tokens, tokens - 2, "aug-ft")
    assert rows(catalog, Job) == 0


def test_a_job_that_finds_the_kb_over_the_limit_fails_with_the_reason_and_writes_nothing(
    catalog, kb, limits, kadapt_env
):
    from kadapt.jobs import create_job, run_job

    slug, tokens = kb
    # queued while the KB was within the limits (or resumed after the limits were lowered)
    train = create_job(catalog, "train", params={"kb": slug, "mode": "ft", "adapter_id": "a1", "config": {}})
    augment = create_job(catalog, "augment", params={"kb": slug, "augmenters": ["sentence-split"]})
    limits(max_kb_tokens_ft=tokens - 1, max_kb_tokens_aug_ft=tokens - 1)

    trained, augmented = run_job(catalog, train), run_job(catalog, augment)

    assert (trained.state, trained.error) == ("failed", refusal(tokens, tokens - 1, "ft"))
    assert (augmented.state, augmented.error) == ("failed", refusal(tokens, tokens - 1, "aug-ft"))
    assert rows(catalog, Adapter) == rows(catalog, Augmentation) == 0
    assert not (kadapt_env / "data" / "adapters").exists()


def test_a_decision_names_modes_over_their_limit_as_not_eligible(catalog, kb, limits):
    from kadapt.policy import decide_kb, set_workload

    slug, tokens = kb
    set_workload(catalog, slug, {"queries_per_day": 1000, "horizon_days": 30, "accuracy_floor": 0.6})
    assert decide_kb(catalog, slug, estimates=make_estimates()).mode == "ft"  # the cheapest at this volume

    limits(max_kb_tokens_ft=tokens - 1)
    second = decide_kb(catalog, slug, estimates=make_estimates())
    assert second.mode == "aug-ft"
    assert f"- ft: not eligible: {refusal(tokens, tokens - 1, 'ft')}." in second.rationale

    limits(max_kb_tokens_ft=tokens - 1, max_kb_tokens_aug_ft=tokens - 1)
    third = decide_kb(catalog, slug, estimates=make_estimates())
    assert third.mode == "icl"
    assert "- aug-ft: not eligible:" in third.rationale and "- ft: not eligible:" in third.rationale


def test_the_fixed_policy_pinned_to_a_mode_over_its_limit_is_refused_up_front(catalog, kb, limits):
    from kadapt.jobs import submit
    from kadapt.policy import set_workload

    slug, tokens = kb
    set_workload(catalog, slug, {"mode": "ft"}, policy="fixed")
    limits(max_kb_tokens_ft=tokens - 1)
    expected = f"the fixed policy pins KB 'facts' to ft, but {refusal(tokens, tokens - 1, 'ft')}"

    for kind in ("adapt", "evaluate"):
        with pytest.raises(KBTooLarge) as refused:
            submit(catalog, kind, kb_id=get_kb(catalog, slug).id, params={"kb": slug})
        assert refused.value.message == expected
    set_workload(catalog, slug, {"mode": "icl"})
    with pytest.raises(KBTooLarge) as refused:
        set_workload(catalog, slug, {"mode": "ft"})
    assert refused.value.message == expected
    assert get_kb(catalog, slug).workload["mode"] == "icl"  # the refused change was not saved
    assert rows(catalog, Job) == 0


def test_a_sync_adds_no_documents_past_the_kb_limit_and_keeps_the_ones_it_holds(catalog, limits, kadapt_env):
    from kadapt.settings import get_settings

    limits(max_kb_documents=3)
    first, second = kadapt_env / "first", kadapt_env / "second"
    first.mkdir()
    second.mkdir()
    for name in ("a", "b"):
        (first / f"{name}.md").write_text(f"Document {name} of the first source.\n")
    for name in ("c", "d"):
        (second / f"{name}.md").write_text(f"Document {name} of the second source.\n")
    create_kb(catalog, "capped")
    add_source(catalog, get_settings(), "capped", "files", {"path": str(first)})
    add_source(catalog, get_settings(), "capped", "files", {"path": str(second)})

    stats = sync_kb(catalog, "capped")

    assert (stats.added, stats.failed) == (3, 1)
    assert set(documents_of(catalog, "capped")) == {"a.md", "b.md", "c.md"}
    message = (
        "not added: KB 'capped' holds 3 documents, the most KADAPT_MAX_KB_DOCUMENTS=3 allows; "
        "raise the setting or remove documents"
    )
    assert errors_of(catalog, "capped") == {"d.md": message}

    (first / "a.md").write_text("Document a, edited.\n")  # documents already held keep syncing
    (first / "b.md").unlink()  # and a removed one frees its place for the next sync
    again = sync_kb(catalog, "capped")
    assert (again.updated, again.deleted) == (1, 1)
    assert documents_of(catalog, "capped")["a.md"] == "Document a, edited."
    sync_kb(catalog, "capped")
    assert set(documents_of(catalog, "capped")) == {"a.md", "c.md", "d.md"}
    assert errors_of(catalog, "capped") == {}


@pytest.mark.slow
def test_adapt_leaves_modes_over_their_limit_out_of_the_pilot_and_chooses_among_the_rest(catalog, limits, kadapt_env):
    from kadapt.jobs import get_job, submit
    from kadapt.kbs import latest_decision
    from kadapt.probes import import_probes
    from kadapt.settings import get_settings
    from tests.cli.test_adapt_loop import write_benchmark

    limits(max_kb_tokens_ft=10, max_kb_tokens_aug_ft=10)
    documents, probes = write_benchmark(kadapt_env)
    create_kb(catalog, "bench")
    add_source(catalog, get_settings(), "bench", "jsonl", {"path": str(documents)})
    sync_kb(catalog, "bench")
    import_probes(catalog, "bench", probes)

    job = get_job(catalog, submit(catalog, "adapt", kb_id=get_kb(catalog, "bench").id, params={"kb": "bench"}))

    assert job.state == "succeeded", job.error
    assert job.result["mode"] == "icl" and job.result["adapter"] is None
    decision = latest_decision(catalog, "bench")
    assert {row["mode"] for row in decision.estimates["estimates"]} == {"icl"}
    assert set(decision.estimates["excluded"]) == {"ft", "aug-ft", "aug-ft+rag"}  # it serves the aug-ft adapter
    assert "- ft: not eligible: KB 'bench' has " in decision.rationale
    assert "- aug-ft: not eligible: KB 'bench' has " in decision.rationale
    assert "- aug-ft+rag: not eligible: KB 'bench' has " in decision.rationale
    assert any(warning.startswith("ft not measured: KB 'bench' has ") for warning in decision.estimates["warnings"])
    assert rows(catalog, Adapter) == rows(catalog, Augmentation) == 0
    assert not (kadapt_env / "data" / "pilots").exists()
