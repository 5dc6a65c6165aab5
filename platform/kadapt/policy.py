"""The policy engine: decisions from measurements, workloads and costs.

A policy (``register_policies``) turns the pilot's estimates (:mod:`kadapt.pilot`) and the KB's workload
into a :class:`~kadapt.catalog.Decision` (the whole loop that measures and then decides is
:func:`kadapt.adapt.adapt_kb`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from sqlalchemy import select

from kadapt.catalog import Catalog, Decision, KnowledgeBase, Snapshot
from kadapt.costs import (
    ChangeRate,
    ModeEstimate,
    PolicyDecision,
    UpkeepTerms,
    Workload,
    break_even_table,
    money,
    plan_upkeep,
    warm_start_shape,
)
from kadapt.delta import change_rate
from kadapt.errors import InvalidInput, KadaptError, KBTooLarge, NotFound
from kadapt.jobs import JobContext
from kadapt.kb_limits import MODE_LIMITS, mode_problems
from kadapt.kbs import get_kb, latest_decision, latest_snapshot
from kadapt.modes import ADAPTER_MODES, RAG_MODE
from kadapt.pilot import mean_accuracy, pilot_sample, run_pilot
from kadapt.readers import stored_readers
from kadapt.settings import Settings, get_settings

__all__ = [
    "PolicyDecision",
    "check_adaptable",
    "decide_kb",
    "decision_summary",
    "get_policy",
    "pilot_sample",
    "price_queries",
    "run_pilot",
    "set_workload",
]


def get_policy(name: str, plugins=None):
    from kadapt.plugins import get_plugins, pick

    return pick((plugins or get_plugins()).contributions("register_policies"), name, "policy", error=NotFound)


# -- decisions --------------------------------------------------------------------------------------------

MEASURE_NAMES = {
    "served": "served accuracy (free-form answers judged by the {judge} judge)",
    "mc": "multiple-choice likelihood",
}


@dataclass
class Measure:
    """The accuracy a decision weighed: ``requested`` (KADAPT_POLICY_MEASURE), ``used``, the sentence saying so."""

    requested: str
    used: str
    text: str


def weighed_estimates(
    estimates: list[ModeEstimate], workload: Workload, requested: str, judge: str
) -> tuple[list[ModeEstimate], Measure]:
    """The estimates with ``accuracy`` set to the measure the policy weighs: served accuracy when requested and
    measured for every mode on every kind the decision weighs; else multiple-choice likelihood, and why."""
    served_name = MEASURE_NAMES["served"].format(judge=judge)
    if requested == "mc":
        text = f"Accuracy measure: {MEASURE_NAMES['mc']} (KADAPT_POLICY_MEASURE=mc)."
        return estimates, Measure(requested, "mc", text)
    kinds = workload.kinds or sorted({kind for estimate in estimates for kind in estimate.accuracy})
    absent = sorted({kind for row in estimates for kind in kinds if kind not in (row.served or {})})
    if absent or not estimates:
        text = (
            f"Accuracy measure: {MEASURE_NAMES['mc']}, because {served_name} is absent on "
            f"{', '.join(absent) or 'every kind'} (MC-only probes: no chat form, or measured before served "
            "evaluation); `kadapt adapt` measures it for probes with a chat question and accepted answers."
        )
        return estimates, Measure(requested, "mc", text)
    weighed = [replace(row, accuracy=row.served) for row in estimates]
    return weighed, Measure(requested, "served", f"Accuracy measure: {served_name}.")


def _workload(kb: KnowledgeBase) -> Workload:
    return Workload.from_dict(kb.workload)


def set_workload(
    catalog: Catalog, slug: str, changes: dict[str, Any], policy: str | None = None, *, clear: tuple[str, ...] = ()
) -> KnowledgeBase:
    """Update the KB's workload (and policy); the fields in ``clear`` go back to their defaults (an emptied budget:
    none). Re-decides from the last pilot's estimates when there are any."""
    from kadapt.probes import KINDS

    kb = get_kb(catalog, slug)
    current = {key: value for key, value in (kb.workload or {}).items() if key not in clear}
    workload = Workload.from_dict(current | {k: v for k, v in changes.items() if v is not None})
    known = list(KINDS) + sorted(_probe_kinds(catalog, kb) - set(KINDS))  # built in, and the KB's own (imported)
    unknown = [kind for kind in workload.kinds or [] if kind not in known]
    if unknown:
        raise InvalidInput(f"unknown probe kind(s) {', '.join(unknown)}; use {', '.join(known)}")
    check_policy(policy or kb.policy, workload)
    check_adaptable(catalog, slug, policy, workload=workload)
    with catalog.session() as session:
        row = session.get(KnowledgeBase, kb.id)
        row.workload = workload.to_dict()
        if policy is not None:
            row.policy = policy
    if latest_decision(catalog, slug) is not None:
        decide_kb(catalog, slug, reason="the workload or policy changed")
    return get_kb(catalog, slug)


def _probe_kinds(catalog: Catalog, kb: KnowledgeBase) -> set[str]:
    """The kinds of the KB's probes (an imported benchmark's own kinds among them)."""
    from kadapt.catalog import Probe

    with catalog.session() as session:
        return set(session.scalars(select(Probe.kind).where(Probe.kb_id == kb.id).distinct()))


def check_policy(name: str, workload: Workload) -> None:
    """Raise a clear error now, before anything is saved or measured, when the policy cannot decide (its own
    ``check(workload)``, when it has one)."""
    check = getattr(get_policy(name), "check", None)
    if check is not None:
        check(workload)


def price_queries(modes: list[ModeEstimate], estimates: dict[str, Any], workload: Workload) -> None:
    """Per-query cost from each mode's prompt tokens and the workload's answer length, at the serving
    throughput and price recorded with the measurement."""
    from kadapt.costs import Throughput

    if "throughput" not in estimates:
        return
    throughput = Throughput(**estimates["throughput"])
    usd_per_second = estimates.get("usd_per_hour", get_settings().usd_per_hour) / 3600
    for estimate in modes:
        seconds = throughput.query_seconds(estimate.prompt_tokens_per_query, workload.answer_tokens)
        estimate.per_query_seconds = round(seconds, 4)
        estimate.per_query_usd = seconds * usd_per_second


def price_upkeep(
    catalog: Catalog,
    kb: KnowledgeBase,
    modes: list[ModeEstimate],
    estimates: dict[str, Any],
    workload: Workload,
    settings: Settings,
) -> ChangeRate | None:
    """Each adapter mode's upkeep over the horizon (:func:`kadapt.costs.plan_upkeep`): at the KB's measured change
    rate, the retrain cadence that costs least while the delta stays fresh, its retrains (warm starts, a full one
    every ``KADAPT_WARM_START_MAX``) and, between them, the questions about changed documents, answered at icl's
    prompt length."""
    rate = change_rate(catalog, kb.id)
    usd_per_token = 0.0
    if "throughput" in estimates:
        speed = estimates["throughput"]["prefill_tokens_per_second"]
        usd_per_token = estimates.get("usd_per_hour", settings.usd_per_hour) / 3600 / max(speed, 1e-9)
    icl_tokens = next((row.prompt_tokens_per_query for row in modes if row.mode == "icl"), 0.0)
    warm_epochs, repeats = warm_start_shape(
        settings.adapt_epochs, settings.warm_start_epochs, settings.warm_start_changed_passes
    )
    for estimate in modes:
        if estimate.mode not in ADAPTER_MODES:
            continue
        terms = UpkeepTerms(
            usd_per_prompt_token=usd_per_token,
            warm_start_max=settings.warm_start_max,
            # the replayed documents train for the warm epochs, the changed ones for their passes, of a full
            # training's epochs
            replay_share=settings.warm_start_replay * warm_epochs / settings.adapt_epochs,
            changed_share=min(1.0, warm_epochs * repeats / settings.adapt_epochs),
            max_share=settings.delta_max_share,
            max_chars=settings.delta_max_chars,
            icl_prompt_tokens=icl_tokens,
            delta_routed=estimate.mode != RAG_MODE,  # aug-ft+rag retrieves from the current documents anyway
        )
        plan_upkeep(estimate, rate, workload, terms)
    return rate


def _upkeep_note(rate: ChangeRate | None, modes: list[ModeEstimate]) -> str:
    if rate is None or rate.documents_per_day <= 0:
        return ""
    lines = [
        f"Change rate: {rate.documents_per_day:.2f} documents/day over the last {rate.days:g} days "
        f"({rate.snapshots} snapshots)."
    ]
    for estimate in modes:
        plan = estimate.upkeep or {}
        if plan.get("cadence_days"):
            lines.append(
                f"{estimate.mode}: retrain every {plan['cadence_days']:g} days ({plan['retrains']:g} retrains, "
                f"${plan['usd']:,.4f} with the changed documents in the prompt between them; up to "
                f"{plan['stale_documents']:g} documents answered from the prompt)"
                + ("" if plan.get("within_limits") else "; stale even then (KADAPT_DELTA_MAX_SHARE)")
                + "."
            )
    return "\n".join(lines)


def _rationale(measure, decision, refused, reason, table, notes, estimates) -> str:
    """Why the decision: the measure, the policy's lines, the modes refused, the break-evens and notes."""
    rationale = measure.text + "\n" + decision.rationale
    rationale += "".join(f"\n- {mode}: not eligible: {why}." for mode, why in sorted(refused.items()))
    if reason:
        rationale = f"Re-decided because {reason}.\n" + rationale
    rationale += "".join(
        f"\nBreak-even {row['from']} -> {row['to']}: "
        + ("never (it costs more per query)" if row["queries"] is None else f"{row['queries']:,.0f} queries")
        for row in table
    )
    rationale += "".join("\n" + note for note in notes)
    return rationale + _recipe_note(estimates) + _decoding_note(estimates)


def _store_decision(catalog, kb, snapshot, policy_name, mode, workload, estimates, table, rationale, context):
    with catalog.session() as session:
        row = Decision(
            kb_id=kb.id,
            snapshot_id=snapshot.id if snapshot else None,
            policy=policy_name,
            mode=mode,
            workload=workload.to_dict(),
            estimates=estimates,
            break_even={f"{r['from']}->{r['to']}": r["queries"] for r in table},
            rationale=rationale,
            job_id=context.job_id if context else None,
        )
        session.add(row)
        decoding = ((estimates.get("details") or {}).get("icl") or {}).get("decoding")
        if decoding is not None:  # icl's answers are served as the pilot found better (kept when not measured)
            session.get(KnowledgeBase, kb.id).icl_contrast = float(decoding["chosen"])
    return row


def _permissions_note(catalog: Catalog, kb) -> str | None:
    """What a decision says when some documents are restricted to groups (their readers, from their source): an
    adapter has seen every document, so only callers who may read them all are answered by one."""
    from sqlalchemy import select

    from kadapt.catalog import Document

    with catalog.session() as session:
        metas = list(session.scalars(select(Document.meta).where(Document.kb_id == kb.id)))
    restricted = [readers for readers in map(stored_readers, metas) if readers is not None]
    if not restricted:
        return None
    groups = sorted({group for readers in restricted for group in readers})
    return (
        f"Permissions: {len(restricted)} of {len(metas)} documents may be read only by some groups "
        f"({', '.join(groups) or 'none but admins'}). An adapter has seen every document, so a caller who may not "
        "read them all is answered by icl over the documents they may read, never by the adapter (a per-audience "
        "KB, one per group, gets each group its own adapter)."
    )


def decide_kb(
    catalog: Catalog,
    slug: str,
    *,
    estimates: dict[str, Any] | None = None,
    policy: str | None = None,
    reason: str = "",
    context: JobContext | None = None,
) -> Decision:
    """Apply the KB's policy to ``estimates`` (default: the last decision's, i.e. the last pilot) and its
    current workload; store and return the Decision. Per-query costs follow the workload's answer length;
    estimates measured on an older snapshot are used as they are, and the rationale says so."""
    kb = get_kb(catalog, slug)
    if estimates is None:
        previous = latest_decision(catalog, slug)
        if previous is None:
            raise InvalidInput(
                f"KB {slug!r} has no measurements yet; run `kadapt decide {slug}` or `kadapt adapt {slug}`"
            )
        estimates = dict(previous.estimates)
    snapshot = latest_snapshot(catalog, kb.id)
    workload = _workload(kb)
    policy_name = policy or kb.policy
    chosen_policy = get_policy(policy_name)
    modes = [ModeEstimate.from_dict(row) for row in estimates["estimates"]]
    price_queries(modes, estimates, workload)
    settings = get_settings()
    rate = price_upkeep(catalog, kb, modes, estimates, workload, settings)
    notes = [note for note in [_upkeep_note(rate, modes), _permissions_note(catalog, kb)] if note]
    measured_on = estimates.get("snapshot", {}).get("id")
    if snapshot is not None and measured_on is not None and measured_on != snapshot.id:
        notes.append(
            f"Estimates were measured on snapshot {measured_on}; the KB is now at snapshot {snapshot.id}. "
            f"Run `kadapt adapt {slug}` to measure again."
        )
    # modes the KB is too large for (measured before it grew, or left out of the pilot) are not offered
    refused = mode_problems(catalog, kb, {row.mode for row in modes} | set(estimates.get("excluded") or {}))
    eligible = [row for row in modes if row.mode not in refused]
    if refused and not eligible:
        raise KBTooLarge("; ".join(refused.values()))
    judge = (estimates.get("served") or {}).get("judge") or settings.judge
    weighed, measure = weighed_estimates(eligible, workload, settings.policy_measure, judge)
    decision = chosen_policy.decide(weighed, workload)
    if decision.mode in refused:  # a policy that ignores the estimates, such as fixed
        raise KBTooLarge(f"the {policy_name} policy chose {decision.mode}, but {refused[decision.mode]}")
    table = break_even_table(eligible)
    rationale = _rationale(measure, decision, refused, reason, table, notes, estimates)
    estimates = dict(estimates) | {
        "break_even": table,
        "workload": workload.to_dict(),
        "estimates": [asdict(estimate) for estimate in modes],
        "measure": asdict(measure),
        "change_rate": asdict(rate) if rate is not None else None,
    }
    row = _store_decision(
        catalog, kb, snapshot, policy_name, decision.mode, workload, estimates, table, rationale, context
    )
    if context:
        context.log(f"decision: {decision.mode} ({policy_name})")
    return row


def redecide_after_change(
    catalog: Catalog, slug: str, snapshot: Snapshot, context: JobContext | None = None, cause: str = "a sync"
) -> None:
    """A KB that was decided before gets a new decision when a change (``cause``: a sync, a source's removal)
    records a new snapshot: the policy weighs the last measurement against the current workload, and the
    rationale says the estimates come from an older snapshot (``kadapt adapt`` measures again)."""
    if latest_decision(catalog, slug) is None:
        return
    try:
        decision = decide_kb(catalog, slug, reason=f"{cause} recorded snapshot {snapshot.id}", context=context)
    except KadaptError as exc:  # the sync itself succeeded; a policy that cannot decide is reported, not fatal
        if context:
            context.log(f"could not re-decide: {exc.message}")
        return
    if context:
        context.log(f"re-decided: {decision.mode} (run `kadapt adapt {slug}` to measure the new snapshot)")


def _decoding_note(estimates: dict[str, Any]) -> str:
    """The rationale's line on how icl answers are decoded, when the pilot measured both ways."""
    decoding = ((estimates.get("details") or {}).get("icl") or {}).get("decoding")
    if not decoding or not decoding.get("contrast"):
        return ""
    plain, contrast = mean_accuracy(decoding["plain"]), mean_accuracy(decoding["contrast"])
    how = f"context-aware decoding (weight {decoding['weight']:g})" if decoding["chosen"] else "plain decoding"
    return (
        f"\nicl answers with {how}: mean served accuracy plain {plain:.2f}, context-aware {contrast:.2f} "
        "(KADAPT_ICL_CONTRAST)."
    )


def _recipe_note(estimates: dict[str, Any]) -> str:
    """The rationale's line on aug-ft's augmentation recipe, when the pilot compared several."""
    detail = (estimates.get("details") or {}).get("aug-ft") or {}
    tried = detail.get("recipes")
    if not detail.get("recipe") or not tried:
        return ""
    scores = ", ".join(f"{'+'.join(row['augmenters'])} {row['score']:.2f}" for row in tried)
    measure = "served" if any(row.get("served") for row in tried) else "MC"
    return (
        f"\naug-ft trains on augmenters {'+'.join(detail['recipe'])}: the best of {len(tried)} recipes on the "
        f"probes (mean {measure} accuracy: {scores})."
    )


def check_adaptable(
    catalog: Catalog,
    kb: str,
    policy: str | None = None,
    settings: Settings | None = None,
    workload: Workload | None = None,
    **_: Any,
) -> None:
    """A KB whose policy pins it (``pinned_mode(workload)``, e.g. the fixed policy) to a mode it is too large for
    cannot be adapted: say so up front."""
    row = get_kb(catalog, kb)
    name = policy or row.policy
    pinned = getattr(get_policy(name), "pinned_mode", None)
    mode = pinned(workload or Workload.from_dict(row.workload)) if pinned is not None else None
    if mode in MODE_LIMITS:
        problem = mode_problems(catalog, row, [mode], settings).get(mode)
        if problem:
            raise KBTooLarge(f"the {name} policy pins KB {kb!r} to {mode}, but {problem}")


def _summary_row(estimate: ModeEstimate, workload: Workload, kinds: list[str], chosen: str) -> dict[str, Any]:
    meets, short = estimate.meets(workload.accuracy_floor, kinds)
    return {
        "mode": estimate.mode,
        "chosen": estimate.mode == chosen,
        "accuracy": {kind: estimate.accuracy.get(kind) for kind in kinds},
        "one_off": money(estimate.one_off_usd),
        "upkeep": money(estimate.upkeep_usd) if estimate.upkeep_usd else None,
        "per_query": money(estimate.per_query_usd),
        "total": money(estimate.total(workload.queries)),
        "total_usd": estimate.total(workload.queries),
        "meets": meets,
        "short": short,
    }


def _headline(rows: list[dict[str, Any]], chosen: str, policy: str, floor: float) -> str:
    row = next((row for row in rows if row["chosen"]), None)
    if row is None:  # a mode that was not measured (a pinned one)
        return f"Served by {chosen}, as the {policy} policy says; it was not measured."
    requirement = f"the {floor:.2f} accuracy requirement"
    meeting = [other for other in rows if other["meets"]]
    if not row["meets"]:
        if meeting:
            return f"Served by {chosen}, which misses {requirement} on {', '.join(row['short'])} ({policy} policy)."
        return f"Served by {chosen}: no mode meets {requirement}, so the most accurate one is served."
    if row["total_usd"] <= min(other["total_usd"] for other in meeting):
        return f"Served by {chosen}: the cheapest mode that meets {requirement} ({row['total']} over the horizon)."
    return f"Served by {chosen}: it meets {requirement}; cheaper modes that do are set aside by the {policy} policy."


def decision_summary(row: Decision) -> dict[str, Any]:
    """A decision as the console shows it: a one-sentence ``headline``, the ``measure`` it weighed, and one table
    row per mode (accuracy per cared-for kind with its interval, costs, whether it meets the requirement), from
    the estimates and workload the decision stored."""
    estimates = row.estimates or {}
    workload = Workload.from_dict(row.workload)
    modes = [ModeEstimate.from_dict(data) for data in estimates.get("estimates") or []]
    measure = estimates.get("measure") or {}
    if measure.get("used") == "served":
        modes = [replace(mode, accuracy=mode.served or {}) for mode in modes]
    kinds = workload.kinds or sorted({kind for mode in modes for kind in mode.accuracy})
    rows = [_summary_row(mode, workload, kinds, row.mode) for mode in modes]
    return {
        "headline": _headline(rows, row.mode, row.policy, workload.accuracy_floor),
        "measure": "served answers" if measure.get("used") == "served" else "multiple-choice likelihood",
        "kinds": kinds,
        "floor": workload.accuracy_floor,
        "queries": workload.queries,
        "rows": rows,
    }
