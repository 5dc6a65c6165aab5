"""The cost model and the built-in policies, on fixed estimates (no model involved)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import pytest
from sqlalchemy import select

from kadapt.costs import ModeEstimate, Workload, break_even, break_even_table
from kadapt.errors import InvalidInput
from kadapt_policies import AccuracyFirst, CostAware, Fixed
from tests.browser import REPO
from tests.estimates import make_estimates


def estimates(**changes) -> list[ModeEstimate]:
    return [ModeEstimate.from_dict(row) for row in make_estimates(**changes)["estimates"]]


def workload_for(queries: float, **extra) -> Workload:
    return Workload(queries_per_day=queries / 10, horizon_days=10, accuracy_floor=0.8, **extra)


def test_break_even_formula():
    icl, ft, aug = estimates()
    # Q* = (C0(ft) - C0(icl)) / (c(icl) - c(ft)) = 0.30 / 0.003
    assert break_even(icl, ft) == pytest.approx(100.0)
    assert break_even(icl, aug) == pytest.approx(300.0)
    assert break_even(ft, icl) is None  # icl never gets cheaper than ft once ft is ahead
    same = ModeEstimate("x", {}, one_off_usd=0.0, per_query_usd=0.001)
    assert break_even(icl, same) == 0.0
    table = break_even_table([icl, ft, aug])
    assert [(row["to"], round(row["queries"])) for row in table] == [("ft", 100), ("aug-ft", 300)]


def test_low_volume_picks_icl_and_high_volume_a_fine_tuned_mode_switching_at_break_even():
    policy = CostAware()
    icl, ft, _ = estimates()
    point = break_even(icl, ft)
    below = policy.decide(estimates(), workload_for(point * 0.98))
    above = policy.decide(estimates(), workload_for(point * 1.02))
    assert below.mode == "icl"
    assert above.mode == "ft"
    assert "cheapest mode that meets the floor" in above.rationale
    # both sides of the computed volume, far away too
    assert policy.decide(estimates(), workload_for(1)).mode == "icl"
    assert policy.decide(estimates(), workload_for(1e6)).mode == "ft"


def test_a_mode_below_the_accuracy_floor_is_not_chosen_however_cheap():
    measured = {
        "icl": {"reversal": (44, 48)},
        "ft": {"reversal": (20, 48)},  # the reversal curse: cheap per query but wrong
        "aug-ft": {"reversal": (47, 48)},
    }
    rows = estimates(measured=measured)
    decision = CostAware().decide(rows, workload_for(1e6, kinds=["reversal"]))
    assert decision.mode == "aug-ft"
    assert "ft: reversal 0.42" in decision.rationale and "misses the floor on reversal" in decision.rationale


def test_when_no_mode_meets_the_floor_the_most_accurate_is_chosen():
    measured = {"icl": {"reversal": (30, 48)}, "ft": {"reversal": (24, 48)}, "aug-ft": {"reversal": (34, 48)}}
    decision = CostAware().decide(estimates(measured=measured), workload_for(10))
    assert decision.mode == "aug-ft"
    assert "No mode meets the floor" in decision.rationale


@pytest.mark.parametrize("policy", [CostAware, AccuracyFirst])
def test_a_kind_the_kb_cares_about_that_was_not_measured_is_an_error_naming_it(policy):
    """Not a decision 'at mean accuracy 0.00': the KB asked about syllogisms and none were measured."""
    with pytest.raises(InvalidInput, match=r"probe kind\(s\) syllogism, .*measured: reversal, verbatim"):
        policy().decide(estimates(), workload_for(10, kinds=["syllogism", "reversal"]))
    assert policy().decide(estimates(), workload_for(10, kinds=["reversal"])).mode in ("icl", "ft", "aug-ft")


def test_accuracy_first_and_fixed():
    assert AccuracyFirst().decide(estimates(), workload_for(1)).mode == "aug-ft"
    assert Fixed().decide(estimates(), workload_for(1, mode="icl")).mode == "icl"
    with pytest.raises(InvalidInput, match="fixed policy needs"):
        Fixed().decide(estimates(), workload_for(1))


def test_workload_validation():
    with pytest.raises(InvalidInput, match="unknown field"):
        Workload.from_dict({"queries": 3})
    with pytest.raises(InvalidInput, match="accuracy_floor"):
        Workload(accuracy_floor=2)
    assert Workload(queries_per_day=20, horizon_days=30).queries == 600


def test_decisions_are_stored_and_redecided_when_the_workload_changes(catalog):
    from kadapt.kbs import create_kb, latest_decision
    from kadapt.policy import decide_kb, set_workload
    from kadapt.report import report_data

    create_kb(catalog, "pol")
    set_workload(catalog, "pol", {"queries_per_day": 1, "horizon_days": 10, "accuracy_floor": 0.8})
    first = decide_kb(catalog, "pol", estimates=make_estimates())
    assert first.mode == "icl" and first.break_even["icl->ft"] == pytest.approx(100.0)
    set_workload(catalog, "pol", {"queries_per_day": 100})  # 1,000 queries: past the break-even
    second = latest_decision(catalog, "pol")
    assert second.id != first.id and second.mode == "ft"
    assert second.rationale.startswith("Re-decided because the workload")
    data = report_data(catalog, "pol")
    assert data["decision"]["mode"] == "ft" and {row["mode"] for row in data["costs"]} == {"icl", "ft", "aug-ft"}
    set_workload(catalog, "pol", {}, policy="accuracy-first")
    assert latest_decision(catalog, "pol").mode == "aug-ft"


def test_a_decision_from_bare_estimates_still_has_a_report(catalog):
    """Estimates handed to decide_kb by hand (or stored by an older version) may lack most of what a pilot
    writes: the report shows what is there, in its one shape, and leaves rows that measured nothing out."""
    from kadapt.kbs import create_kb
    from kadapt.policy import decide_kb
    from kadapt.report import render_report, report_data

    create_kb(catalog, "bare")
    estimates = make_estimates()
    bare = {"estimates": estimates["estimates"], "accuracy": estimates["accuracy"] + [{"mode": "icl", "kind": "x"}]}
    bare["snapshot"] = {"id": None, "hash": "abc", "documents": 3, "written_by": "an older version"}
    bare["served"] = {"accuracy": [{"mode": "icl", "kind": "reversal", "accuracy": 0.5}]}
    decide_kb(catalog, "bare", estimates=bare)

    data = report_data(catalog, "bare")
    jsonschema.validate(data, json.loads((REPO / "docs" / "report.schema.json").read_text()))
    assert {row["kind"] for row in data["results"]} == {"verbatim", "reversal"}  # the empty row is left out
    assert data["snapshot"] == {"id": None, "hash": "abc", "documents": 3} and data["modes"] == []
    assert data["served"]["results"][0]["ci_low"] == 0.5 and data["served"]["judge"] is None
    assert 'id="accuracy-chart"' in render_report(data)


def test_a_new_snapshot_triggers_a_new_decision(catalog, kadapt_env):
    from kadapt.kbs import add_source, create_kb, latest_decision
    from kadapt.policy import decide_kb
    from kadapt.settings import get_settings
    from kadapt.sync import sync_kb

    docs = kadapt_env / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Vorlim is the mentor of Tessaly.\n")
    create_kb(catalog, "snap")
    add_source(catalog, get_settings(), "snap", "files", {"path": str(docs)})
    sync_kb(catalog, "snap")
    first = decide_kb(catalog, "snap", estimates=make_estimates() | {"snapshot": {"id": 1}})
    sync_kb(catalog, "snap")  # nothing changed: no new snapshot, no new decision
    assert latest_decision(catalog, "snap").id == first.id
    (docs / "b.md").write_text("Quenbrook supplies Marrowick.\n")
    sync_kb(catalog, "snap")
    again = latest_decision(catalog, "snap")
    assert again.id != first.id and again.snapshot_id != first.snapshot_id
    assert "a sync recorded snapshot" in again.rationale and "measured on snapshot 1" in again.rationale


def test_removing_a_source_records_a_snapshot_and_triggers_a_new_decision(catalog, store, kadapt_env):
    from kadapt.kbs import add_source, create_kb, latest_decision, list_sources
    from kadapt.policy import decide_kb
    from kadapt.settings import get_settings
    from kadapt.sync import remove_source, sync_kb

    create_kb(catalog, "gone")
    for name, text in (("a", "Vorlim is the mentor of Tessaly.\n"), ("b", "Quenbrook supplies Marrowick.\n")):
        (kadapt_env / name).mkdir()
        (kadapt_env / name / f"{name}.md").write_text(text)
        add_source(catalog, get_settings(), "gone", "files", {"path": str(kadapt_env / name)})
    sync_kb(catalog, "gone")
    first = decide_kb(catalog, "gone", estimates=make_estimates() | {"snapshot": {"id": 1}})
    removed = list_sources(catalog, "gone")[1]
    remove_source(catalog, store, removed.id)
    again = latest_decision(catalog, "gone")
    assert again.id != first.id and again.snapshot_id != first.snapshot_id
    assert f"the removal of source {removed.id} recorded snapshot {again.snapshot_id}" in again.rationale
    sync_kb(catalog, "gone")  # the removal's snapshot is the KB's state: the sync finds nothing new
    assert latest_decision(catalog, "gone").id == again.id


def test_every_mode_over_budget_says_so_and_takes_the_cheapest_accurate_one():
    decision = CostAware().decide(estimates(), workload_for(1e6, budget_usd=1.0))
    assert decision.mode == "ft"
    assert "exceeds the budget" in decision.rationale and "No mode meets the floor" not in decision.rationale


def test_a_policy_that_cannot_decide_is_refused_before_anything_is_saved(catalog):
    from kadapt.kbs import create_kb, get_kb
    from kadapt.policy import set_workload

    create_kb(catalog, "fx")
    with pytest.raises(InvalidInput, match="fixed policy needs the workload's mode"):
        set_workload(catalog, "fx", {}, policy="fixed")
    with pytest.raises(InvalidInput, match="unknown probe kind"):
        set_workload(catalog, "fx", {"kinds": ["reversals"]})
    assert get_kb(catalog, "fx").policy == "cost-aware" and get_kb(catalog, "fx").workload == {}
    assert set_workload(catalog, "fx", {"mode": "ft"}, policy="fixed").policy == "fixed"


def test_answer_length_prices_queries_at_the_measured_throughput():
    from kadapt.policy import price_queries

    data = make_estimates() | {
        "throughput": {
            "prefill_tokens_per_second": 400.0,
            "decode_tokens_per_second": 20.0,
            "measured_at": 0.0,
            "model": "m",
            "threads": 2,
        },
        "usd_per_hour": 3.6,  # one tenth of a cent per second
    }
    short, long = estimates(), estimates()
    price_queries(short, data, Workload(answer_tokens=10))
    price_queries(long, data, Workload(answer_tokens=100))
    icl = short[0]
    assert icl.per_query_seconds == pytest.approx(900 / 400 + 10 / 20)
    assert icl.per_query_usd == pytest.approx(icl.per_query_seconds * 0.001)
    assert long[0].per_query_usd - icl.per_query_usd == pytest.approx(90 / 20 * 0.001)


def test_pilot_sample_gives_every_source_a_share():
    from types import SimpleNamespace

    from kadapt.pilot import SampleDoc, pilot_sample

    documents = [SampleDoc(f"s{source}-d{index}", source, "text") for source in range(30) for index in range(10)]
    probes = [SimpleNamespace(source_ids=[doc.id]) for doc in documents]
    chosen, whole = pilot_sample(documents, probes, 10)
    # 30 sources for a sample of 10: each source still gets one document, and no more
    assert not whole and len(chosen) == 30
    assert sorted(doc_id.split("-")[0] for doc_id in chosen) == sorted(f"s{source}" for source in range(30))
    skewed = [SampleDoc(f"a{i}", 1, "t") for i in range(95)] + [SampleDoc(f"b{i}", 2, "t") for i in range(5)]
    chosen, _ = pilot_sample(skewed, [SimpleNamespace(source_ids=[d.id]) for d in skewed], 8)
    assert len(chosen) == 8 and any(doc_id.startswith("b") for doc_id in chosen)


def test_a_pilot_adapter_published_before_its_stats_were_written_is_reused(catalog, kadapt_env):
    """A kill between publishing a sample's pilot adapter and writing its stats: the next run takes the
    published adapter and its recorded stats, without training again."""
    from kadapt.catalog import Document
    from kadapt.kbs import add_source, create_kb, get_kb, latest_snapshot
    from kadapt.pilot import pilot_adapter
    from kadapt.settings import get_settings
    from kadapt.sync import sync_kb
    from kadapt.training import TrainConfig

    settings = get_settings()
    docs = kadapt_env / "docs"
    docs.mkdir()
    for name, text in [("a.md", "Vorlim is the mentor of Tessaly."), ("b.md", "Quenbrook supplies Marrowick.")]:
        (docs / name).write_text(text + "\n")
    create_kb(catalog, "pilot")
    add_source(catalog, settings, "pilot", "files", {"path": str(docs)})
    sync_kb(catalog, "pilot")
    kb = get_kb(catalog, "pilot")
    snapshot = latest_snapshot(catalog, kb.id)
    with catalog.session() as session:
        sample = [session.scalars(select(Document.id).where(Document.kb_id == kb.id)).first()]
    config = TrainConfig(rank=4, alpha=8, max_steps=2, rows_per_step=1, row_tokens=32)
    args = (catalog, kb, snapshot, "ft", sample, False, config, settings, None)

    adapter_id, path, stats = pilot_adapter(*args)
    weights = Path(path) / "adapter_model.safetensors"
    trained_at = weights.stat().st_mtime_ns
    (Path(path) / "kadapt-stats.json").unlink()  # the process died here

    again_id, again_path, again_stats = pilot_adapter(*args)

    assert (again_id, again_path) == (adapter_id, path)
    assert weights.stat().st_mtime_ns == trained_at  # not trained again
    assert again_stats["steps"] == stats["steps"] and again_stats["final_loss"] == stats["final_loss"]


# MC says ft learned the facts both ways; asked in chat, ft answers reversed questions 5 times in 48 (the reversal
# curse), aug-ft 20, icl 40: what employees get disagrees with the multiple-choice figure
MC_SAYS_FT = {"icl": {"reversal": (44, 48)}, "ft": {"reversal": (45, 48)}, "aug-ft": {"reversal": (46, 48)}}
SERVED_SAYS_ICL = {"icl": {"reversal": (40, 48)}, "ft": {"reversal": (5, 48)}, "aug-ft": {"reversal": (20, 48)}}


def test_the_policy_decides_on_served_accuracy_by_default_and_on_mc_when_set(catalog, monkeypatch):
    from kadapt.kbs import create_kb
    from kadapt.policy import decide_kb, set_workload
    from kadapt.report import report_data
    from kadapt.settings import get_settings

    create_kb(catalog, "srv")
    set_workload(catalog, "srv", {"queries_per_day": 1e5, "horizon_days": 10, "accuracy_floor": 0.6})
    data = make_estimates(measured=MC_SAYS_FT, served=SERVED_SAYS_ICL)

    served = decide_kb(catalog, "srv", estimates=data)

    assert served.mode == "icl"  # at 1M queries ft is far cheaper, but served it misses the floor
    assert served.rationale.startswith(
        "Accuracy measure: served accuracy (free-form answers judged by the string judge).\n"
    )
    assert "- ft: reversal 0.10 [" in served.rationale and "misses the floor on reversal" in served.rationale
    assert "0.94" not in served.rationale  # ft's MC figure is not what was weighed
    report = report_data(catalog, "srv")
    assert report["measure"]["used"] == "served" and report["served"]["results"][1]["accuracy"] == 5 / 48
    jsonschema.validate(report, json.loads((REPO / "docs" / "report.schema.json").read_text()))

    monkeypatch.setenv("KADAPT_POLICY_MEASURE", "mc")
    get_settings.cache_clear()
    mc = decide_kb(catalog, "srv", estimates=data)

    assert mc.mode == "ft"
    assert mc.rationale.startswith("Accuracy measure: multiple-choice likelihood (KADAPT_POLICY_MEASURE=mc).\n")
    assert "- ft: reversal 0.94 [" in mc.rationale


def test_without_served_accuracy_the_policy_falls_back_to_mc_and_says_so(catalog):
    from kadapt.kbs import create_kb
    from kadapt.policy import decide_kb, set_workload

    create_kb(catalog, "mc")
    set_workload(catalog, "mc", {"queries_per_day": 1e5, "horizon_days": 10, "accuracy_floor": 0.6})
    mc_only = decide_kb(catalog, "mc", estimates=make_estimates(measured=MC_SAYS_FT))
    # served for two modes only: it cannot rank the third, so the whole decision is on MC
    partial = decide_kb(
        catalog,
        "mc",
        estimates=make_estimates(
            measured=MC_SAYS_FT, served={"icl": {"reversal": (40, 48)}, "ft": {"reversal": (5, 48)}}
        ),
    )

    for decision in (mc_only, partial):
        assert decision.mode == "ft"
        assert decision.rationale.startswith(
            "Accuracy measure: multiple-choice likelihood, because served accuracy (free-form answers judged by the "
            "string judge) is absent on reversal (MC-only probes"
        )


@pytest.mark.parametrize("policy", ["cost-aware", "accuracy-first"])
def test_on_served_accuracy_a_kind_that_was_not_measured_is_still_an_error_naming_it(catalog, policy):
    from kadapt.kbs import create_kb
    from kadapt.policy import decide_kb, set_workload

    create_kb(catalog, "kinds")
    set_workload(catalog, "kinds", {"kinds": ["syllogism", "reversal"]}, policy=policy)
    data = make_estimates(measured=MC_SAYS_FT, served=SERVED_SAYS_ICL)
    with pytest.raises(InvalidInput, match=r"probe kind\(s\) syllogism, .*measured: reversal\)"):
        decide_kb(catalog, "kinds", estimates=data)


def test_aug_ft_rag_costs_aug_ft_once_and_icl_per_query_and_is_chosen_when_it_answers_best(catalog, kadapt_env):
    """The fourth mode is costed from what it reuses (aug-ft's adapter, icl's prompt) and weighed like the others."""
    from kadapt.costs import Throughput, Workload
    from kadapt.pilot import mode_estimates
    from kadapt.policy import get_policy
    from kadapt.settings import get_settings
    from kadapt.training import TrainConfig

    throughput = Throughput(1000.0, 20.0, 0.0, "m", 2)
    served = {"rephrase": {"correct": 5, "n": 10, "accuracy": 0.5, "low": 0.2, "high": 0.8}}
    details = {
        "floor": {"prompt_tokens_mean": 20},
        "icl": {"prompt_tokens_mean": 400, "context": "retrieval"},
        "ft": {"prompt_tokens_mean": 20, "training": {"tokens": 1000, "tokens_per_second": 100}},
        "aug-ft": {
            "prompt_tokens_mean": 20,
            "training": {"tokens": 3000, "tokens_per_second": 100},
            "augmentation_seconds": 12.0,
        },
        "aug-ft+rag": {"prompt_tokens_mean": 400, "context": "retrieval"},
    }
    modes = ("icl", "ft", "aug-ft", "aug-ft+rag")
    scores = {mode: {"rephrase": served["rephrase"]} for mode in ("floor", *modes)}
    rows = mode_estimates(modes, scores, details, throughput, 1.0, TrainConfig(epochs=2), get_settings(), Workload())
    by_mode = {row.mode: row for row in rows}
    rag, aug, icl = by_mode["aug-ft+rag"], by_mode["aug-ft"], by_mode["icl"]
    assert rag.one_off_seconds == aug.one_off_seconds == 3000 * 2 / 100 + 12.0  # the same adapter, trained once
    assert rag.prompt_tokens_per_query == icl.prompt_tokens_per_query > aug.prompt_tokens_per_query
    assert rag.per_query_usd == icl.per_query_usd

    best = {"correct": 9, "n": 10, "accuracy": 0.9, "low": 0.6, "high": 0.98}
    rag.accuracy = {"rephrase": best}
    decision = get_policy("accuracy-first").decide(rows, Workload())
    assert decision.mode == "aug-ft+rag"


def test_upkeep_picks_the_cheapest_cadence_that_keeps_the_delta_fresh():
    from kadapt.costs import ChangeRate, UpkeepTerms, plan_upkeep

    terms = UpkeepTerms(
        usd_per_prompt_token=1e-6, warm_start_max=3, replay_share=0.25, max_share=0.25, max_chars=10**9,
        icl_prompt_tokens=900, changed_share=0.6,
    )  # fmt: skip
    workload = Workload(queries_per_day=100, horizon_days=90)
    still = ModeEstimate("ft", {}, one_off_usd=1.0)
    plan_upkeep(still, ChangeRate(0.0, 0.0, 30, 3, 100, 50_000), workload, terms)
    assert still.upkeep_usd == 0 and still.upkeep["cadence_days"] is None and "no change" in still.upkeep["why"]
    # 5 of 100 documents a day: at most 5 days between retrains keeps the delta under a quarter of the KB
    busy = ModeEstimate("ft", {}, one_off_usd=1.0)
    plan_upkeep(busy, ChangeRate(5.0, 2_500.0, 30, 20, 100, 50_000), workload, terms)
    plan = busy.upkeep
    assert plan["cadence_days"] in (1, 2, 3) and plan["within_limits"] and plan["stale_share"] <= 0.25
    changed = 5.0 * plan["cadence_days"] / 100
    # a warm start trains the changed documents for 0.6 of a full training and the others for a quarter
    warm = min(1.0, 0.6 * changed + 0.25 * (1 - changed))
    assert plan["retrain_usd"] == pytest.approx((3 * warm + 1.0) / 4)  # three warm starts, then a full one
    # questions about a changed document are answered at icl's prompt length: half the delta's share on average
    delta_tokens = changed / 2 * 900
    assert plan["delta_tokens_per_query"] == pytest.approx(delta_tokens, abs=0.1)
    # the retrains are fixed over the horizon (none at its very end); the delta's prompt is paid per query
    assert plan["retrains"] == math.ceil(90 / plan["cadence_days"]) - 1
    assert busy.upkeep_usd == pytest.approx(plan["retrains"] * plan["retrain_usd"])
    assert busy.per_query_usd == pytest.approx(delta_tokens * 1e-6)
    assert busy.total(9_000) == pytest.approx(1.0 + busy.upkeep_usd + 9_000 * delta_tokens * 1e-6)
    assert busy.total(0) == pytest.approx(1.0 + busy.upkeep_usd)
    # a KB that changes faster than a daily retrain can follow: retrained daily, and said to be stale
    torrent = ModeEstimate("ft", {}, one_off_usd=1.0)
    plan_upkeep(torrent, ChangeRate(60.0, 30_000.0, 30, 20, 100, 50_000), workload, terms)
    assert torrent.upkeep["cadence_days"] == 1 and torrent.upkeep["within_limits"] is False


def test_a_kb_that_changes_often_pays_for_its_retrains_and_the_policy_weighs_them(catalog, kadapt_env):
    """ft is cheaper than icl at this volume when nothing changes; a KB whose documents change every day must
    retrain ft often, and that upkeep makes icl the cheaper mode. The change rate comes from the snapshots."""
    from datetime import timedelta

    from sqlalchemy import update

    from kadapt.catalog import Snapshot, utcnow
    from kadapt.kbs import add_source, create_kb, get_kb
    from kadapt.policy import decide_kb, set_workload
    from kadapt.settings import get_settings
    from kadapt.sync import sync_kb

    docs = kadapt_env / "docs"
    docs.mkdir()
    for index in range(8):
        (docs / f"{index}.md").write_text(f"Policy {index}: the limit is {index} units.\n")
    create_kb(catalog, "churn")
    add_source(catalog, get_settings(), "churn", "files", {"path": str(docs)})
    sync_kb(catalog, "churn")
    set_workload(catalog, "churn", {"queries_per_day": 25, "horizon_days": 40, "accuracy_floor": 0.8})
    quiet = decide_kb(catalog, "churn", estimates=make_estimates())
    assert quiet.mode == "ft" and "Change rate" not in quiet.rationale  # 1,000 queries: past the break-even
    for day in range(1, 5):  # four days, each changing two of the eight documents
        for index in (day % 8, (day + 4) % 8):
            (docs / f"{index}.md").write_text(f"Policy {index}: the limit is {index + 10 * day} units.\n")
        sync_kb(catalog, "churn")
    kb = get_kb(catalog, "churn")
    with catalog.session() as session:
        snapshots = session.scalars(select(Snapshot).where(Snapshot.kb_id == kb.id).order_by(Snapshot.id))
        for age, snapshot in zip(range(4, -1, -1), list(snapshots), strict=True):
            session.execute(
                update(Snapshot).where(Snapshot.id == snapshot.id).values(created_at=utcnow() - timedelta(days=age))
            )
    busy = decide_kb(catalog, "churn", estimates=make_estimates())
    rate = busy.estimates["change_rate"]
    assert rate["snapshots"] == 5 and rate["documents_per_day"] == pytest.approx(8 / 4)
    ft = next(row for row in busy.estimates["estimates"] if row["mode"] == "ft")
    assert ft["upkeep"]["cadence_days"] == 1 and ft["upkeep_usd"] > 0  # 2 of 8 a day: daily keeps it at 25%
    assert busy.mode == "icl", busy.rationale
    assert "Change rate: 2.00 documents/day over the last 4 days (5 snapshots)." in busy.rationale
    assert "ft: retrain every 1 days" in busy.rationale

    from kadapt.report import render_report, report_data

    data = report_data(catalog, "churn")
    jsonschema.validate(data, json.loads((REPO / "docs" / "report.schema.json").read_text()))
    assert data["change_rate"]["documents_per_day"] == pytest.approx(2.0)
    assert next(row for row in data["costs"] if row["mode"] == "ft")["upkeep"]["cadence_days"] == 1
    page = render_report(data)
    assert "Change rate: 2.00 documents added, changed or removed per day over the last 4 days" in page
    assert "retrain every 1 days, up to 2 documents from the prompt" in page


@pytest.mark.parametrize(
    ("epochs", "warm_epochs", "passes", "shape"),
    [(20, 6, 12, (6, 2)), (20, 5, 5, (5, 1)), (20, 4, 10, (4, 3)), (20, 6, 0, (6, 4)), (4, 6, 12, (4, 1))],
)
def test_a_warm_start_spreads_the_changed_documents_passes_over_its_epochs(epochs, warm_epochs, passes, shape):
    """The warm start's epochs are KADAPT_WARM_START_EPOCHS at most the training's; the changed documents' passes
    (0: the training's epochs, at most those) are spread over them, rounded up: the shape both the trainer and the
    cost model use."""
    from kadapt.costs import warm_start_shape

    assert warm_start_shape(epochs, warm_epochs, passes) == shape
