"""Built-in adaptation policies: ``cost-aware`` (the default), ``accuracy-first`` and ``fixed``.

A policy gets the estimates of every mode (accuracy per probe kind with intervals, one-off and per-query
cost on the full KB) and the KB's workload, and returns the mode to serve with the reasons, in words.
"""

from __future__ import annotations

from kadapt.contracts import MODES, ModeEstimate, PolicyDecision, Workload, hookimpl, money
from kadapt.errors import InvalidInput

__all__ = ["AccuracyFirst", "CostAware", "Fixed"]


def _accuracy_line(estimate: ModeEstimate, kinds: list[str] | None) -> str:
    wanted = kinds if kinds is not None else sorted(estimate.accuracy)
    parts = []
    for kind in wanted:
        row = estimate.accuracy.get(kind)
        parts.append(
            f"{kind} {row['accuracy']:.2f} [{row['low']:.2f}-{row['high']:.2f}]" if row else f"{kind} not measured"
        )
    return ", ".join(parts)


def _cost_line(estimate: ModeEstimate, workload: Workload) -> str:
    upkeep = ""
    if estimate.upkeep_usd:  # an adapter mode kept fresh as the KB changes: its retrains and delta prompts
        upkeep = f" + upkeep {money(estimate.upkeep_usd)} (retrain every {estimate.upkeep['cadence_days']:g} days)"
    return (
        f"one-off {money(estimate.one_off_usd)}{upkeep} + {money(estimate.per_query_usd)}/query = "
        f"{money(estimate.total(workload.queries))} over {workload.queries:,.0f} queries"
    )


def _kinds(estimates: list[ModeEstimate], workload: Workload) -> list[str] | None:
    """The probe kinds the decision weighs. A kind the KB cares about that no mode was measured on is an
    error naming it: deciding as if its accuracy were 0.00 would look like a measurement."""
    measured = sorted({kind for estimate in estimates for kind in estimate.accuracy})
    if workload.kinds:
        missing = [kind for kind in workload.kinds if kind not in measured]
        if missing:
            raise InvalidInput(
                f"the KB cares about probe kind(s) {', '.join(missing)}, but no mode was measured on them "
                f"(measured: {', '.join(measured) or 'none'}); import or generate probes of those kinds "
                "(`kadapt probes import`), or set the workload's kinds to measured ones"
            )
        return workload.kinds
    return measured or None


class CostAware:
    """The cheapest mode over the KB's horizon whose accuracy lower bound meets the floor on every probe kind
    the KB cares about; if none does, the most accurate. Modes over the budget are named as such."""

    name = "cost-aware"
    description = "Cheapest mode over the horizon that meets the accuracy floor; else the most accurate."

    def decide(self, estimates: list[ModeEstimate], workload: Workload) -> PolicyDecision:
        if not estimates:
            raise InvalidInput("no estimates to decide from; run the pilot first (`kadapt decide KB`)")
        kinds = _kinds(estimates, workload)
        lines = [
            f"Workload: {workload.queries_per_day:g} queries/day for {workload.horizon_days:g} days "
            f"({workload.queries:,.0f} queries); accuracy floor {workload.accuracy_floor:.2f} (lower 95% bound) "
            f"on {', '.join(kinds or ['all kinds'])}."
        ]
        eligible, accurate = [], []
        for estimate in estimates:
            ok, short = estimate.meets(workload.accuracy_floor, kinds)
            over_budget = workload.budget_usd is not None and estimate.total(workload.queries) > workload.budget_usd
            verdict = "meets the floor" if ok else f"misses the floor on {', '.join(short)}"
            if ok and over_budget:
                verdict += f" but exceeds the budget of {money(workload.budget_usd)}"
            lines.append(
                f"- {estimate.mode}: {_accuracy_line(estimate, kinds)}; {_cost_line(estimate, workload)}; {verdict}."
            )
            if ok:
                accurate.append(estimate)
            if ok and not over_budget:
                eligible.append(estimate)
        if eligible:
            chosen = min(eligible, key=lambda estimate: (estimate.total(workload.queries), estimate.mode))
            lines.append(
                f"Chosen: {chosen.mode}, the cheapest mode that meets the floor "
                f"({money(chosen.total(workload.queries))} over the horizon)."
            )
        elif accurate:
            chosen = min(accurate, key=lambda estimate: (estimate.total(workload.queries), estimate.mode))
            lines.append(
                f"Chosen: {chosen.mode}. Every mode that meets the floor exceeds the budget of "
                f"{money(workload.budget_usd)}; this is the cheapest of them "
                f"({money(chosen.total(workload.queries))} over the horizon)."
            )
        else:
            chosen = max(estimates, key=lambda estimate: (estimate.mean_accuracy(kinds), -estimate.total(0)))
            lines.append(
                f"Chosen: {chosen.mode}. No mode meets the floor, so the most accurate one "
                f"(mean accuracy {chosen.mean_accuracy(kinds):.2f} on the cared-for kinds) is served."
            )
        return PolicyDecision(chosen.mode, "\n".join(lines))


class AccuracyFirst:
    """The most accurate mode on the cared-for kinds (mean accuracy); ties go to the cheaper mode."""

    name = "accuracy-first"
    description = "The most accurate mode on the probe kinds the KB cares about, whatever it costs."

    def decide(self, estimates: list[ModeEstimate], workload: Workload) -> PolicyDecision:
        if not estimates:
            raise InvalidInput("no estimates to decide from; run the pilot first (`kadapt decide KB`)")
        kinds = _kinds(estimates, workload)
        chosen = max(
            estimates, key=lambda estimate: (round(estimate.mean_accuracy(kinds), 6), -estimate.total(workload.queries))
        )
        lines = [f"- {e.mode}: {_accuracy_line(e, kinds)}; {_cost_line(e, workload)}." for e in estimates]
        lines.append(f"Chosen: {chosen.mode}, the highest mean accuracy ({chosen.mean_accuracy(kinds):.2f}).")
        return PolicyDecision(chosen.mode, "\n".join(lines))


class Fixed:
    """Always the mode named in the workload's ``mode`` (e.g. to pin a KB to icl)."""

    name = "fixed"
    description = "Always the mode set in the KB's workload ('mode'); estimates are recorded, not weighed."

    def check(self, workload: Workload) -> None:
        """The workload must name the mode to pin."""
        if workload.mode not in MODES:
            raise InvalidInput(
                "the fixed policy needs the workload's mode: "
                "`kadapt kb set-workload KB --mode icl|ft|aug-ft|aug-ft+rag`"
            )

    def pinned_mode(self, workload: Workload) -> str | None:
        """The mode this policy chooses whatever is measured: the workload's."""
        return workload.mode

    def decide(self, estimates: list[ModeEstimate], workload: Workload) -> PolicyDecision:
        self.check(workload)
        lines = [f"- {e.mode}: {_cost_line(e, workload)}." for e in estimates]
        lines.append(f"Chosen: {workload.mode}, fixed by the KB's workload setting.")
        return PolicyDecision(workload.mode, "\n".join(lines))


@hookimpl
def register_policies(register):
    register(CostAware())
    register(AccuracyFirst())
    register(Fixed())
