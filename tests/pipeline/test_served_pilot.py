"""The pilot's served evaluation: each mode's chat answers through the serving path, judged, stored with the
pilot's Evaluation and shown beside multiple-choice accuracy; MC-only probes leave served accuracy absent.

Real parts: the embedded 135M model, Chroma and SQLite; a tiny KB (3 people of samples/biographies)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from kadapt.catalog import Evaluation, ProbeAnswer
from kadapt.judge import get_judge, judge_probe
from kadapt.kbs import add_source, create_kb, get_kb
from kadapt.pilot import run_pilot
from kadapt.policy import decide_kb
from kadapt.probes import import_probes, snapshot_probes
from kadapt.report import render_report, report_data
from kadapt.settings import get_settings
from kadapt.sync import sync_kb
from tests.conftest import REPO

BIOGRAPHIES = REPO / "samples" / "biographies"


def _tiny_kb(catalog, folder, slug: str, *, mc_only: bool = False) -> None:
    """3 people of samples/biographies and their 6 probes (rephrase and reversal); ``mc_only`` drops their chat
    form. Free-form sentences the small model does read: with its sentence in the prompt it names most right."""
    documents = [json.loads(line) for line in BIOGRAPHIES.joinpath("documents.jsonl").read_text().splitlines()][:3]
    people = {document["id"] for document in documents}
    probes = [json.loads(line) for line in BIOGRAPHIES.joinpath("probes.jsonl").read_text().splitlines()]
    probes = [probe for probe in probes if set(probe["source_ids"]) <= people]
    if mc_only:
        for probe in probes:
            probe.pop("chat_question"), probe.pop("answers")
    (folder / slug).mkdir(parents=True)
    documents_path, probes_path = folder / slug / "documents.jsonl", folder / slug / "probes.jsonl"
    documents_path.write_text("".join(json.dumps(line) + "\n" for line in documents))
    probes_path.write_text("".join(json.dumps(line) + "\n" for line in probes))
    create_kb(catalog, slug, title="People")
    add_source(catalog, get_settings(), slug, "jsonl", {"path": str(documents_path)})
    sync_kb(catalog, slug)
    import_probes(catalog, slug, probes_path)


def _answers(catalog, run_id: str) -> list[ProbeAnswer]:
    with catalog.session() as session:
        return session.scalars(select(ProbeAnswer).where(ProbeAnswer.run_id == run_id)).all()


@pytest.mark.slow
def test_the_pilot_measures_served_accuracy_for_the_floor_and_icl_and_reuses_it(catalog, kadapt_env):
    _tiny_kb(catalog, kadapt_env, "tiny")

    estimates = run_pilot(catalog, "tiny", modes=("icl",), sample_size=2)  # 2 of the 3 people: 4 probes

    served = estimates["served"]
    assert (served["chat_probes"], served["mc_only_probes"], served["judge"]) == (4, 0, "string")
    by_mode = {}
    for row in served["accuracy"]:
        by_mode.setdefault(row["mode"], {})[row["kind"]] = row
    assert set(by_mode) == {"floor", "icl"} and {kind for rows in by_mode.values() for kind in rows} == {
        "rephrase",
        "reversal",
    }
    for rows in by_mode.values():
        for row in rows.values():
            assert row["n"] == 2 and row["low"] <= row["accuracy"] <= row["high"]
    correct = {mode: sum(row["correct"] for row in rows.values()) for mode, rows in by_mode.items()}
    # the floor cannot know made-up people; with the documents in the prompt the model names some right
    assert correct["floor"] == 0 < correct["icl"]
    # where each mode's time went: scoring and answering
    assert all({"mc", "served"} <= set(estimates["details"][mode]["seconds_by_part"]) for mode in ("floor", "icl"))

    probes = {probe.id: probe for probe in snapshot_probes(catalog, estimates["snapshot"]["id"])}
    for mode, served_as in (("floor", "no-context"), ("icl", "icl-whole-kb")):
        rows = _answers(catalog, served["run_ids"][mode])
        assert len(rows) == 4 and {(row.mode, row.served_as, row.adapter_id) for row in rows} == {
            (mode, served_as, None)
        }
        assert sum(row.correct for row in rows) == correct[mode]
        for row in rows:  # the stored verdict is the judge's on the stored answer
            assert row.correct == judge_probe(probes[row.probe_id], row.answer, get_judge()).correct
        samples = served["samples"][mode]
        assert [item["correct"] for item in samples] == sorted((item["correct"] for item in samples), reverse=True)
        assert {item["answer"] for item in samples} <= {row.answer for row in rows}
    floor_tokens = max(row.prompt_tokens for row in _answers(catalog, served["run_ids"]["floor"]))
    assert floor_tokens < 80 < min(row.prompt_tokens for row in _answers(catalog, served["run_ids"]["icl"]))
    icl = next(row for row in served["overstatement"] if (row["mode"], row["kind"]) == ("icl", "all"))
    assert icl["gap"] == pytest.approx(icl["mc"] - correct["icl"] / 4)

    with catalog.session() as session:
        stored = session.scalars(select(Evaluation).where(Evaluation.scope == "pilot")).all()
    assert {row.mode: row.stats["served"]["run_id"] for row in stored} == served["run_ids"]

    again = run_pilot(catalog, "tiny", modes=("icl",), sample_size=2)  # measured before: reused, not asked again

    assert again["served"] == served
    with catalog.session() as session:  # floor, icl plain and icl context-aware: 4 answers each, once
        assert session.query(ProbeAnswer).count() == 12

    # icl's decoding was measured both ways; the better is served (plain on a tie) and the decision says so
    decoding = estimates["details"]["icl"]["decoding"]
    assert decoding["weight"] == 0.5 and set(decoding["plain"]) == set(decoding["contrast"]) == {"rephrase", "reversal"}
    mean = {way: sum(row["accuracy"] for row in decoding[way].values()) / 2 for way in ("plain", "contrast")}
    assert decoding["chosen"] == (0.5 if mean["contrast"] > mean["plain"] else 0.0)
    served_icl = {kind: {key: row[key] for key in ("correct", "n")} for kind, row in by_mode["icl"].items()}
    chosen = decoding["contrast" if decoding["chosen"] else "plain"]
    assert served_icl == {kind: {key: row[key] for key in ("correct", "n")} for kind, row in chosen.items()}
    assert get_kb(catalog, "tiny").icl_contrast == 0.0  # measured, not yet decided
    decision = decide_kb(catalog, "tiny", estimates=again)
    assert get_kb(catalog, "tiny").icl_contrast == decoding["chosen"]
    assert f"context-aware {mean['contrast']:.2f}" in decision.rationale
    assert decision.rationale.startswith("Accuracy measure: served accuracy (free-form answers judged by the string")
    html = render_report(report_data(catalog, "tiny"))
    assert "Served accuracy: what chat users get" in html and "How much multiple choice overstates" in html
    assert "Sample answers" in html and "Served accuracy is absent" not in html


def test_mc_only_probes_leave_served_accuracy_absent_and_say_so(catalog, kadapt_env):
    _tiny_kb(catalog, kadapt_env, "mconly", mc_only=True)

    estimates = run_pilot(catalog, "mconly", modes=("icl",))

    assert estimates["served"] is None
    assert any("Every probe is MC-only" in warning for warning in estimates["warnings"])
    with catalog.session() as session:
        assert session.query(ProbeAnswer).count() == 0
    decision = decide_kb(catalog, "mconly", estimates=estimates)
    assert decision.rationale.startswith("Accuracy measure: multiple-choice likelihood, because served accuracy")
    assert "is absent on rephrase, reversal (MC-only probes" in decision.rationale
    assert "Served accuracy is absent: the probes are MC-only" in render_report(report_data(catalog, "mconly"))


@pytest.mark.slow
def test_the_pilot_compares_augmentation_recipes_and_the_decision_names_the_one_it_trains_on(
    catalog, kadapt_env, monkeypatch
):
    from kadapt.catalog import Adapter
    from tests.conftest import clear_caches

    monkeypatch.setenv("KADAPT_ADAPT_RECIPES", "sentence-split, reverse")
    monkeypatch.setenv("KADAPT_ADAPT_EPOCHS", "2")  # the comparison, not the learning, is under test here
    monkeypatch.setenv("KADAPT_ADAPTER_ROUTING", "false")  # nor routing (tests/pipeline/test_chat_adapters.py)
    clear_caches()
    _tiny_kb(catalog, kadapt_env, "recipes")

    estimates = run_pilot(catalog, "recipes", modes=("aug-ft",))  # the whole KB: real adapters, one per recipe

    detail = estimates["details"]["aug-ft"]
    tried = {tuple(row["augmenters"]): row for row in detail["recipes"]}
    assert list(tried) == [("sentence-split",), ("reverse",)]
    for row in tried.values():  # each recipe measured on served accuracy (the chat probes)
        by_kind = row["served"]
        assert set(by_kind) == {"rephrase", "reversal"}
        assert row["score"] == pytest.approx(sum(r["accuracy"] for r in by_kind.values()) / 2, abs=1e-4)
    best = max(tried.values(), key=lambda row: row["score"])  # the first of equals
    assert detail["recipe"] == best["augmenters"] and detail["adapter"] == best["adapter"]
    # each adapter trained on its own recipe's augmentations only, and says so in its config
    with catalog.session() as session:
        adapters = {row.id: row for row in session.scalars(select(Adapter)).all()}
    assert {adapters[row["adapter"]].config["augmenters"][0] for row in tried.values()} == {"sentence-split", "reverse"}
    kinds = {tuple(adapters[row["adapter"]].config["augmenters"]): set(adapters[row["adapter"]].stats["augmentations"])
             for row in tried.values()}  # fmt: skip
    assert kinds == {("sentence-split",): {"sentence", "cumulative"}, ("reverse",): {"reversed"}} or kinds == {
        ("sentence-split",): {"sentence"},
        ("reverse",): {"reversed"},
    }

    decision = decide_kb(catalog, "recipes", estimates=estimates)
    assert f"aug-ft trains on augmenters {'+'.join(best['augmenters'])}: the best of 2 recipes" in decision.rationale

    again = run_pilot(catalog, "recipes", modes=("aug-ft",))  # measured before: reused, nothing trained again
    assert again["details"]["aug-ft"]["recipes"] == detail["recipes"]
    with catalog.session() as session:
        assert session.query(Adapter).count() == 2


def test_the_pilot_warns_when_an_adapter_forgets_more_than_five_percent_of_general_answers():
    from kadapt.pilot import forgetting_warnings
    from kadapt.settings import Settings

    routed = {"routed_to_base": 19, "adapter_alone_accuracy": 0.45, "adapter_alone_drop": 0.5263}
    details = {
        "floor": {},
        "ft": {
            "forgetting": {"questions": 20, "base_accuracy": 0.95, "adapter_accuracy": 0.5, "relative_drop": 0.4737}
        },
        "aug-ft": {
            "forgetting": {"questions": 20, "base_accuracy": 0.95, "adapter_accuracy": 0.95, "relative_drop": 0.0}
            | routed
        },
    }
    warnings = forgetting_warnings(details, ["floor", "ft", "aug-ft"], Settings())
    assert warnings == [
        "Through ft's adapter the model answers 50% of 20 general questions right, the base model 95% (a relative "
        "drop of 47%, over 5%): employees asking it anything beyond the KB get worse answers."
    ]
    # a LoRA server does not route: what its users get is the adapter answering everything
    on_server = forgetting_warnings(details, ["aug-ft"], Settings(lora_server_url="http://127.0.0.1:8001"))
    assert on_server == [
        "Through aug-ft's adapter (on the LoRA server, which does not route) the model answers 45% of 20 general "
        "questions right, the base model 95% (a relative drop of 53%, over 5%): employees asking it anything beyond "
        "the KB get worse answers."
    ]


def test_an_unknown_augmenter_in_a_recipe_is_refused_before_anything_is_measured(catalog, kadapt_env, monkeypatch):
    from kadapt.errors import InvalidInput
    from tests.conftest import clear_caches

    monkeypatch.setenv("KADAPT_ADAPT_RECIPES", "local,revers")
    clear_caches()
    _tiny_kb(catalog, kadapt_env, "typo")

    with pytest.raises(
        InvalidInput, match=r"unknown augmenter\(s\) revers in KADAPT_ADAPT_RECIPES.*installed: .*reverse"
    ):
        run_pilot(catalog, "typo", modes=("icl", "aug-ft"))
    with catalog.session() as session:
        assert session.query(ProbeAnswer).count() == 0  # nothing was asked
