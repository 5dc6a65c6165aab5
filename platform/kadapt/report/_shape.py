"""The report's data: one documented shape (:class:`Report`), built from a KB's latest decision."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kadapt.catalog import Catalog
from kadapt.errors import NotFound
from kadapt.kbs import get_kb, latest_decision
from kadapt.modes import trained_mode
from kadapt.settings import get_settings
from kadapt.views import DecisionView

# --- the report's data: one documented shape -------------------------------------------------------
#
# ``kadapt report`` writes it as JSON next to the page, ``GET /v1/kbs/{kb}/report`` answers it, and its JSON
# Schema is kept in docs/report.schema.json (a test fails when the two part ways).


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ReportKB(_Shape):
    slug: str
    title: str


class ReportSnapshot(_Shape):
    id: int | None = Field(default=None, description="The snapshot the pilot measured.")
    hash: str | None = None
    documents: int | None = Field(default=None, description="Documents in the snapshot.")


class AccuracyRow(_Shape):
    """One mode on one probe kind: the share answered right with its 95% interval."""

    mode: str = Field(description="floor (no context), icl, ft, aug-ft, aug-ft+rag, ...")
    kind: str = Field(description="The probe kind: verbatim, rephrase, reversal, syllogism, ...")
    n: int | None = Field(default=None, description="Probes asked.")
    correct: int | None = Field(default=None, description="Probes answered right.")
    accuracy: float
    ci_low: float = Field(description="Lower end of the 95% Wilson interval.")
    ci_high: float = Field(description="Upper end of the 95% Wilson interval.")
    chance: float | None = Field(default=None, description="What guessing scores (multiple choice).")
    shortcut_level: bool = Field(default=False, description="Not above what the no-context floor scores.")


class CostRow(_Shape):
    """What a mode costs on the whole KB: once (augmenting, training) and per query (prompt and answer)."""

    mode: str
    one_off_usd: float
    per_query_usd: float
    one_off_seconds: float
    per_query_seconds: float
    one_off_tokens: int = Field(description="Tokens the one-off work processes: training (all epochs) and generated.")
    prompt_tokens_per_query: float
    details: dict[str, Any] = Field(default_factory=dict, description="The parts the costs are made of.")
    upkeep_usd: float = Field(
        default=0.0, description="Keeping an adapter mode fresh over the horizon: retrains and delta prompts."
    )
    upkeep: dict[str, Any] | None = Field(
        default=None,
        description="The retrain plan: cadence_days, retrains, retrain_usd, delta_tokens_per_query, delta_usd, "
        "stale_documents (answered from the prompt just before a retrain), within_limits.",
    )


class BreakEvenRow(_Shape):
    from_mode: str = Field(alias="from")
    to: str
    queries: float | None = Field(description="Queries after which ``to`` costs less than ``from``; null: never.")


class ServedResults(_Shape):
    """Served accuracy: the chat answers each mode gives, judged, beside the multiple-choice figures."""

    judge: str | None = Field(default=None, description="The judge of the answers: string, model, ...")
    policy_measure: str | None = None
    chat_probes: int | None = Field(default=None, description="Pilot probes with a chat form.")
    mc_only_probes: int | None = Field(default=None, description="Pilot probes that are multiple-choice only.")
    results: list[AccuracyRow]
    overstatement: list[dict[str, Any]] = Field(
        default_factory=list, description="Per mode and kind: MC accuracy minus served accuracy."
    )
    samples: dict[str, list[dict[str, Any]]] = Field(
        default_factory=dict, description="Per mode, a few answers with their verdicts."
    )
    run_ids: dict[str, Any] = Field(default_factory=dict)


class Report(_Shape):
    """A KB's evidence: accuracy per mode and probe kind, costs, break-even volumes and the decision."""

    kb: ReportKB
    model: str = Field(description="The base model the modes were measured on.")
    snapshot: ReportSnapshot | None = None
    generated_at: str
    modes: list[str] = Field(default_factory=list, description="Modes measured, the no-context floor first.")
    results: list[AccuracyRow] = Field(description="Multiple-choice accuracy, per mode and probe kind.")
    served: ServedResults | None = Field(default=None, description="None when every probe is multiple-choice only.")
    costs: list[CostRow]
    break_even: list[BreakEvenRow]
    workload: dict[str, Any] = Field(description="Queries per day, horizon, accuracy floor, kinds, USD per hour.")
    measure: dict[str, Any] | None = Field(default=None, description="Which accuracy the policy weighed.")
    decision: DecisionView
    forgetting: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Per adapter mode.")
    warnings: list[str] = Field(default_factory=list)
    pilot: dict[str, Any] = Field(default_factory=dict, description="Sample size, probes, scale, training setup.")
    excluded: dict[str, str] = Field(default_factory=dict, description="Modes the KB is too large for, and why.")
    throughput: dict[str, Any] | None = None
    change_rate: dict[str, Any] | None = Field(
        default=None, description="How fast the KB's documents change: per day, from its snapshot history."
    )
    usd_per_hour: float | None = None
    stage_seconds: dict[str, Any] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict, description="Per mode, what the pilot measured.")


def _results(rows: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Accuracy rows as measured (``low``/``high``) in the report's shape (``ci_low``/``ci_high``)."""
    out = []
    for row in rows or []:
        if not isinstance(row, dict) or not isinstance(row.get("accuracy"), int | float):
            continue  # a row measured nothing: the page leaves it out too
        fields = {key: value for key, value in row.items() if key in AccuracyRow.model_fields}
        out.append(fields | {"ci_low": row.get("low", row["accuracy"]), "ci_high": row.get("high", row["accuracy"])})
    return out


def _one_off_tokens(estimate: dict[str, Any]) -> int:
    details = estimate.get("details") or {}
    return sum(details.get(key) or 0 for key in ("training_tokens", "augmentation_generated_tokens"))


def _cost_rows(estimates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The cost rows; a mode served from another's adapter (aug-ft+rag) has that training's one-off tokens."""
    tokens = {row.get("mode"): _one_off_tokens(row) for row in estimates}
    return [
        {key: row[key] for key in CostRow.model_fields if key in row}
        | {"one_off_tokens": tokens.get(trained_mode(row["mode"])) or tokens[row["mode"]]}
        for row in estimates
    ]


# -- the report's data, from the KB's latest decision -------------------------------------------------------


def build_report(catalog: Catalog, slug: str) -> Report:
    """The KB's report: its latest decision with the estimates behind it (estimates stored by any version,
    or handed to ``decide_kb`` by hand: what they lack is left out)."""
    from kadapt.catalog import utcnow

    kb = get_kb(catalog, slug)
    decision = latest_decision(catalog, slug)
    if decision is None:
        raise NotFound(f"KB {slug!r} has no decision yet; run `kadapt decide {slug}` or `kadapt adapt {slug}`")
    measured = dict(decision.estimates)
    served = measured.get("served")
    if served:
        served = {key: value for key, value in served.items() if key in ServedResults.model_fields}
        served["results"] = _results(measured["served"].get("accuracy"))
    if isinstance(measured.get("snapshot"), dict):
        measured["snapshot"] = {key: measured["snapshot"].get(key) for key in ReportSnapshot.model_fields}
    usd_per_hour = measured.get("usd_per_hour", get_settings().usd_per_hour)
    return Report(
        kb=ReportKB(slug=kb.slug, title=kb.title),
        model=kb.base_model,
        generated_at=utcnow().isoformat(),
        results=_results(measured.get("accuracy")),
        served=served or None,
        costs=_cost_rows(measured.get("estimates", [])),
        workload=decision.workload | {"usd_per_hour": usd_per_hour},
        decision=DecisionView.of(decision),
        usd_per_hour=usd_per_hour,
        **{key: measured[key] for key in _MEASURED_AS_IS if measured.get(key) is not None},
    )


def report_data(catalog: Catalog, slug: str, *, hide_samples: bool = False) -> dict[str, Any]:
    """:func:`build_report` as JSON's types (``hide_samples``: as :func:`without_samples` leaves it)."""
    report = build_report(catalog, slug)
    return (without_samples(report) if hide_samples else report).model_dump(mode="json", by_alias=True)


SAMPLES_HIDDEN = (
    "Sample answers are left out: they may quote documents of this KB that you may not read (document permissions)."
)


def without_samples(report: Report) -> Report:
    """``report`` without its sample answers, for a reader who may not read every document of the KB: the pilot's
    answers were drawn from all of them (kadapt.readers). Figures, costs and the decision stay."""
    details = {
        mode: row | {"served": {key: v for key, v in row["served"].items() if key != "samples"}}
        if isinstance(row, dict) and isinstance(row.get("served"), dict)
        else row
        for mode, row in report.details.items()
    }
    served = report.served.model_copy(update={"samples": {}}) if report.served is not None else None
    return report.model_copy(
        update={"served": served, "details": details, "warnings": [*report.warnings, SAMPLES_HIDDEN]}
    )


# parts of the decision's estimates the report holds unchanged
_MEASURED_AS_IS = (
    "snapshot", "modes", "break_even", "measure", "forgetting", "warnings", "pilot", "excluded", "throughput",
    "stage_seconds", "details", "change_rate",
)  # fmt: skip
