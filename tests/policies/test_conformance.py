"""The conformance suite of policies: every policy registered through ``register_policies`` (kadapt's own and any
installed plugin's) is run over typical pilot estimates and must keep the contract of :class:`kadapt.contracts.Policy`.
A new policy is checked as soon as it is installed."""

from __future__ import annotations

import copy
from dataclasses import asdict

import pytest

from kadapt.costs import ModeEstimate, PolicyDecision, Workload
from kadapt.errors import InvalidInput
from kadapt.modes import MODES
from kadapt.plugins import get_plugins
from tests.estimates import make_estimates

POLICIES = sorted(get_plugins().contributions("register_policies"))


def typical_estimates(**changes) -> list[ModeEstimate]:
    return [ModeEstimate.from_dict(row) for row in make_estimates(**changes)["estimates"]]


def accepted_workloads(policy, estimates: list[ModeEstimate]) -> list[Workload]:
    """The workloads a KB may give (the default, and one pinning each measured mode) that ``policy.check`` lets
    through; all of them for a policy without ``check``."""
    candidates = [Workload(), *(Workload(mode=row.mode) for row in estimates)]
    accepted = []
    for workload in candidates:
        try:
            if hasattr(policy, "check"):
                policy.check(workload)
        except InvalidInput:
            continue
        accepted.append(workload)
    return accepted


def check_decision(policy, estimates: list[ModeEstimate], workload: Workload) -> PolicyDecision:
    """``policy.decide`` returns a PolicyDecision naming one of the measured modes with a rationale, leaves its
    inputs as they were, decides the same twice, and chooses its pinned mode where it pins one."""
    before = (copy.deepcopy([asdict(row) for row in estimates]), copy.deepcopy(asdict(workload)))
    decision = policy.decide(estimates, workload)
    assert isinstance(decision, PolicyDecision), type(decision)
    assert decision.mode in MODES and decision.mode in {row.mode for row in estimates}, decision.mode
    assert isinstance(decision.rationale, str) and decision.rationale.strip(), decision
    assert ([asdict(row) for row in estimates], asdict(workload)) == before, "decide changed its inputs"
    assert policy.decide(estimates, workload) == decision, "the same inputs gave another decision"
    if hasattr(policy, "pinned_mode"):
        assert policy.pinned_mode(workload) in (None, decision.mode), (policy.pinned_mode(workload), decision)
    return decision


@pytest.mark.parametrize("name", POLICIES)
def test_a_policy_names_and_describes_itself(name):
    policy = get_plugins().contributions("register_policies")[name]
    assert policy.name == name
    assert isinstance(policy.description, str) and policy.description.strip()
    assert callable(policy.decide)


@pytest.mark.parametrize("name", POLICIES)
def test_a_policy_chooses_a_measured_mode_for_typical_measurements(name):
    policy = get_plugins().contributions("register_policies")[name]
    estimates = typical_estimates()
    workloads = accepted_workloads(policy, estimates)
    assert workloads, f"{name} accepts no workload: neither the default nor one pinning a measured mode"
    for workload in workloads:
        check_decision(policy, estimates, workload)


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize(
    "workload_changes",
    [
        {"queries_per_day": 0.0},  # nothing served
        {"queries_per_day": 1e6, "horizon_days": 365},  # heavy use
        {"budget_usd": 0.0},  # no mode fits the budget
        {"accuracy_floor": 1.0},  # no mode meets the floor
        {"kinds": ["reversal"]},  # one kind cared for
    ],
)
def test_a_policy_still_chooses_a_measured_mode_at_the_edges_of_a_workload(name, workload_changes):
    """A decision is always one of the measured modes with its reason, even when nothing fits: the KB keeps a
    mode to serve."""
    policy = get_plugins().contributions("register_policies")[name]
    estimates = typical_estimates()
    for workload in accepted_workloads(policy, estimates):
        edged = Workload(**(asdict(workload) | workload_changes))
        check_decision(policy, estimates, edged)


@pytest.mark.parametrize("name", POLICIES)
def test_a_policy_decides_through_the_pipeline(name, catalog):
    """``kadapt.policy.decide_kb`` with the policy set on a KB records a decision for one of the measured modes."""
    from kadapt.kbs import create_kb
    from kadapt.policy import decide_kb, set_workload

    policy = get_plugins().contributions("register_policies")[name]
    data = make_estimates()
    workload = accepted_workloads(policy, typical_estimates())[0]
    create_kb(catalog, "conformance")
    set_workload(catalog, "conformance", {k: v for k, v in asdict(workload).items() if v is not None}, policy=name)
    decision = decide_kb(catalog, "conformance", estimates=data)
    assert decision.mode in {row["mode"] for row in data["estimates"]}, decision
