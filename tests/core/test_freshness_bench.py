"""The freshness benchmark's comparison of a warm start with a full retrain (bench/freshness.py): the paired
difference's interval, what it settles, and the verdicts a stored run is judged again with."""

import argparse
import json

import pytest
from bench.freshness import (
    _settled,
    build_facts,
    difference_interval,
    paired_verdicts,
    print_kept,
    verdicts,
    warm_variants,
)


def _table(both: int, first_only: int, second_only: int, neither: int) -> list[tuple[bool, bool]]:
    return (
        [(True, True)] * both
        + [(True, False)] * first_only
        + [(False, True)] * second_only
        + [(False, False)] * neither
    )


def test_newcombes_worked_example():
    # Newcombe 1998 (Statistics in Medicine 17:2635), Table II example (a), method 10: 0.0569 to 0.3404
    interval = difference_interval(_table(36, 12, 2, 0))
    assert (interval["difference"], interval["low"], interval["high"]) == pytest.approx((0.2, 0.0569, 0.3404), abs=1e-4)


def test_facts_answered_alike_give_an_interval_not_a_point():
    interval = difference_interval([(True, True)] * 3 + [(False, False)] * 3)
    assert interval["difference"] == 0
    assert interval["low"] < -0.2 and interval["high"] > 0.2


def test_the_interval_holds_the_difference_narrows_with_more_facts_and_turns_with_the_order():
    few = [(True, False)] * 3 + [(False, True)] + [(True, True)] * 4 + [(False, False)] * 4
    small, large = difference_interval(few), difference_interval(few * 10)
    assert small["difference"] == large["difference"] == pytest.approx(2 / 12, abs=1e-3)
    for interval in (small, large):
        assert interval["low"] < interval["difference"] < interval["high"]
    assert large["high"] - large["low"] < small["high"] - small["low"]
    swapped = difference_interval([(second, first) for first, second in few])
    assert (swapped["low"], swapped["high"]) == pytest.approx((-small["high"], -small["low"]), abs=1e-3)


def test_one_side_always_right_is_bounded_by_one():
    interval = difference_interval([(True, False)] * 10)
    assert interval["difference"] == 1.0 and interval["high"] == 1.0 and 0.5 < interval["low"] < 1.0
    assert difference_interval([]) is None


def test_what_the_interval_settles():
    assert _settled([(True, True)] * 100 + [(False, False)] * 100)["settled"] == "within"
    assert _settled([(False, True)] * 40 + [(True, True)] * 10)["settled"] == "short"
    assert _settled([(False, True)] + [(True, True)] * 3)["settled"] == "unsettled"
    assert _settled([]) == {}


def test_a_stored_run_without_verdicts_is_judged_again_as_a_new_one_is():
    args = argparse.Namespace(facts=8, changed=2, deleted=1, added=1)
    before, after, groups = build_facts(args, 3)
    new = {fact.id: fact for fact in after}
    changed = [fact_id for fact_id, group in groups.items() if group == "changed"]
    # the full retrain names both new values; the warm start the first new value and the second one's old value
    old = {fact.id: fact.value for fact in before}
    said = {"ft full": {fact_id: f"It is {new[fact_id].value}." for fact_id in changed}}
    said["ft warm"] = {changed[0]: f"It is {new[changed[0]].value}.", changed[1]: f"It is {old[changed[1]]}."}
    stored = {"args": vars(args), "seed": 3, "answers": {}}
    for mode, answers in said.items():
        stored["answers"][mode] = [
            {"fact": fact_id, "group": "changed", "question": new[fact_id].question, "answer": answer}
            for fact_id, answer in answers.items()
        ]
    kept = json.dumps(stored, sort_keys=True)
    assert sorted(paired_verdicts(stored, "ft warm", "ft full", "changed")) == [(False, True), (True, True)]
    assert json.dumps(stored, sort_keys=True) == kept  # judged again, not rewritten
    # verdicts kept with a run's answers are used as they are
    right = verdicts(before, after, groups, said["ft full"])
    for row in stored["answers"]["ft full"]:
        row["correct"] = not right[row["fact"]]
    assert sorted(paired_verdicts(stored, "ft warm", "ft full", "changed")) == [(False, False), (True, False)]
    # a stored run whose facts no longer draw the same from its seed is not judged at all
    stored["answers"]["ft warm"][0]["question"] = "Who leads the Nowhere team?"
    assert paired_verdicts(stored, "ft warm", "ft full", "changed") == []


def test_warm_variants_read_epochs_passes_replay_spread_and_rate():
    lumped = {"warm_start_spread": False}
    assert warm_variants("5x10, 6x12r0.7@5e-3, 5x10s") == [
        ("ft warm 5x10", {"warm_start_epochs": 5, "warm_start_changed_passes": 10} | lumped, None),
        ("ft warm 6x12r0.7@5e-3",
         {"warm_start_epochs": 6, "warm_start_changed_passes": 12, "warm_start_replay": 0.7} | lumped, 0.005),
        ("ft warm 5x10s", {"warm_start_epochs": 5, "warm_start_changed_passes": 10, "warm_start_spread": True}, None),
    ]  # fmt: skip
    for wrong in ("5by10", "5x10t", "5xs"):
        with pytest.raises(ValueError):
            warm_variants(wrong)


def test_a_warm_start_is_shown_against_the_adapter_it_continued(capsys):
    def rows(verdicts):
        return [
            {"fact": f"fact-{index}", "group": "unchanged", "question": "?", "answer": "", "correct": right}
            for index, right in enumerate(verdicts)
        ]

    run = {"groups": {"ft before": {}, "ft warm 5x10": {}, "ft full": {}}}
    run["answers"] = {"ft before": rows([True, False, False]), "ft warm 5x10": rows([True, True, False])}
    print_kept({"groups": run["groups"], "runs": [run, run]})
    assert "- ft warm 5x10: 4/6 against its parent's 2/6" in capsys.readouterr().out
