"""The cost/generalization report of a knowledge base: one self-contained HTML page plus its JSON.

The page needs nothing from the network (no fonts, scripts or styles from elsewhere) so it can be
mailed, archived or opened from a file share; its two charts are inline SVG drawn with matplotlib.
"""

from __future__ import annotations

import io
import json
import math
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape
from pydantic import BaseModel, ConfigDict, Field

from kadapt.catalog import Catalog
from kadapt.errors import NotFound
from kadapt.kbs import get_kb, latest_decision
from kadapt.modes import trained_mode
from kadapt.paths import write_atomic
from kadapt.settings import Settings, get_settings
from kadapt.text import human_time
from kadapt.views import DecisionView

__all__ = [
    "AccuracyRow",
    "BreakEvenRow",
    "CostRow",
    "Report",
    "ReportKB",
    "ReportSnapshot",
    "ServedResults",
    "accuracy_chart_svg",
    "build_report",
    "cost_chart_svg",
    "render_report",
    "report_data",
    "write_kb_report",
    "write_report",
]

FLOOR_MODES = frozenset({"floor", "base"})
MODE_COLOURS = {
    "floor": "#9e9e9e",
    "base": "#9e9e9e",
    "icl": "#0072b2",
    "ft": "#e69f00",
    "aug-ft": "#009e73",
    "aug-ft+rag": "#cc79a7",
}
# Okabe-Ito colours left over for modes a plugin adds; they stay distinguishable for colour-blind readers.
EXTRA_COLOURS = ("#d55e00", "#56b4e9", "#f0e442", "#000000")
ACCURACY_TITLE = "Accuracy by probe kind and mode, with 95% intervals, chance level and the accuracy requirement"
BASELINE_LABEL = "no documents (baseline)"  # the floor mode: the base model answering without the KB
REQUIREMENT_COLOUR = "#a3261d"
# a line style per mode, so that modes whose costs nearly coincide stay told apart (and in greyscale)
LINE_STYLES = ("solid", (0, (6, 3)), (0, (2, 2)), (0, (6, 2, 2, 2)), (0, (1, 3)))
# detail keys as the report names them; others get their underscores turned into spaces
DETAIL_LABELS = {
    "augmentation_generated_tokens": "tokens the model wrote for augmentations",
    "augmentation_seconds": "time writing augmentations",
    "training_tokens": "tokens trained on",
    "training_seconds": "training time",
    "context": "documents in the prompt",
    "adapter_id": "adapter",
    "recipe": "augmentation recipe",
}
COST_TITLE = "Total cost in USD against query volume, per mode, with break-even points"
# Matplotlib settings for every chart: real <text> in the SVG (selectable, scales with the page),
# no TeX parsing of user-supplied labels such as "$5 plans".
_RC = {
    "svg.fonttype": "none",
    "text.parse_math": False,
    "font.size": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
# Small enough that the text stays legible when a phone shrinks the chart to its width.
FIGURE_SIZE = (5.4, 3.6)


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


# --- the report's data, read defensively (a report of an older version may lack any part) ---------------


def _accuracy_rows(report: dict) -> list[dict]:
    rows = report.get("results") or []
    normalised = []
    for row in rows:
        if not isinstance(row, dict) or row.get("accuracy") is None:
            continue
        accuracy = float(row["accuracy"])
        low, high = row.get("ci_low"), row.get("ci_high")
        normalised.append(
            row
            | {
                "mode": str(row.get("mode", "?")),
                "kind": str(row.get("kind", "all")),
                "accuracy": accuracy,
                "low": float(low) if low is not None else accuracy,
                "high": float(high) if high is not None else accuracy,
                "shortcut_level": bool(row.get("shortcut_level")) and row.get("mode") not in FLOOR_MODES,
            }
        )
    return normalised


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _modes(report: dict) -> list[str]:
    """Modes in the report's order, then any mode that only appears in the rows or costs."""
    listed = [str(mode) for mode in report.get("modes") or []]
    seen = [row["mode"] for row in _accuracy_rows(report)] + [str(c.get("mode")) for c in _costs(report)]
    return _unique(listed + seen)


def _kinds(report: dict) -> list[str]:
    return _unique(row["kind"] for row in _accuracy_rows(report))


def _costs(report: dict) -> list[dict]:
    return [cost for cost in report.get("costs") or [] if isinstance(cost, dict) and cost.get("mode")]


def _break_evens(report: dict) -> list[dict]:
    return [row for row in report.get("break_even") or [] if isinstance(row, dict)]


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _horizon_queries(report: dict) -> float | None:
    workload = report.get("workload") or {}
    per_day, days = _finite(workload.get("queries_per_day")), _finite(workload.get("horizon_days"))
    if per_day is None or days is None:
        return None
    return _finite(per_day * days)


def mode_label(mode: str) -> str:
    """A mode as the report names it: the floor is the no-documents baseline, not the accuracy requirement."""
    return BASELINE_LABEL if mode in FLOOR_MODES else mode


def _detail_label(key: str) -> str:
    return DETAIL_LABELS.get(key, key.replace("_", " "))


def _requirement(report: dict) -> float | None:
    """The accuracy every cared-for kind must reach (the workload's floor), if the report has one."""
    return _finite((report.get("workload") or {}).get("accuracy_floor"))


def _colour(mode: str, modes: list[str]) -> str:
    if mode in MODE_COLOURS:
        return MODE_COLOURS[mode]
    extras = [m for m in modes if m not in MODE_COLOURS]
    return EXTRA_COLOURS[extras.index(mode) % len(EXTRA_COLOURS)] if mode in extras else EXTRA_COLOURS[0]


def _total(cost: dict, queries: float) -> float:
    fixed = (_finite(cost.get("one_off_usd")) or 0.0) + (_finite(cost.get("upkeep_usd")) or 0.0)
    return fixed + queries * (_finite(cost.get("per_query_usd")) or 0.0)


def _upkeep(cost: dict) -> str:
    plan = cost.get("upkeep") if isinstance(cost.get("upkeep"), dict) else {}
    days = _finite(plan.get("cadence_days"))
    if days is None:
        return "—"
    stale = "; stale even then" if plan.get("within_limits") is False else ""
    return (
        f"{_usd(cost.get('upkeep_usd'))}: retrain every {days:g} days, up to {_count(plan.get('stale_documents'))} "
        f"documents from the prompt{stale}"
    )


# --- charts ----------------------------------------------------------------------------------------


def _svg(figure, *, salt: str, label: str) -> str:
    """The figure as an <svg> element ready to sit inside HTML, labelled for screen readers."""
    import matplotlib

    buffer = io.StringIO()
    # Each chart gets its own salt: ids stay stable between runs and do not collide within one page.
    # the chart settings again: svg.fonttype is read as the figure is saved (real <text>, not glyph outlines)
    with matplotlib.rc_context(_RC | {"svg.hashsalt": salt}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]  # drop the XML prolog and doctype, which are invalid inside HTML
    tag_end = svg.index(">")
    opening = svg[:tag_end].replace("<svg ", f'<svg role="img" aria-label="{escape(label)}" ', 1)
    return f"{opening}><title>{escape(label)}</title>{svg[tag_end + 1 :]}"


def accuracy_chart_svg(report: dict) -> str:
    """Grouped bars: probe kinds along x, one bar per mode with its 95% interval, chance dashed per kind.

    Returns an ``<svg>`` element, or ``""`` when the report holds no accuracy results.
    """
    rows = _accuracy_rows(report)
    if not rows:
        return ""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    kinds, modes = _kinds(report), [m for m in _modes(report) if any(r["mode"] == m for r in rows)]
    by_key = {(row["mode"], row["kind"]): row for row in rows}
    width = 0.8 / len(modes)
    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=FIGURE_SIZE, layout="constrained")
        axes = figure.subplots()
        for position, kind in enumerate(kinds):
            left = position - 0.4
            for index, mode in enumerate(modes):
                row = by_key.get((mode, kind))
                if row is None:
                    continue
                x = left + width * (index + 0.5)
                accuracy = row["accuracy"]
                axes.bar(
                    x,
                    accuracy,
                    width * 0.9,
                    color=_colour(mode, modes),
                    hatch="///" if row["shortcut_level"] else None,
                    edgecolor="#ffffff" if row["shortcut_level"] else None,
                    linewidth=0,
                )
                error = [[max(accuracy - row["low"], 0.0)], [max(row["high"] - accuracy, 0.0)]]
                axes.errorbar(x, accuracy, yerr=error, fmt="none", ecolor="#222222", elinewidth=1, capsize=3)
            chances = [_finite(by_key[(m, kind)].get("chance")) for m in modes if (m, kind) in by_key]
            chances = [c for c in chances if c is not None]
            if chances:
                chance = sum(chances) / len(chances)
                axes.hlines(chance, left, left + 0.8, colors="#333333", linestyles="dashed", linewidth=1.2)
        requirement = _draw_requirement(axes, report)
        axes.set_xticks(range(len(kinds)), [textwrap.fill(kind, 14) for kind in kinds])
        axes.set_xlim(-0.6, len(kinds) - 0.4)
        axes.set_ylim(0, 1.05)
        axes.set_ylabel("Accuracy")
        axes.grid(axis="y", color="#e6e6e6")
        axes.set_axisbelow(True)
        handles = [Patch(color=_colour(mode, modes), label=mode_label(mode)) for mode in modes]
        handles.append(Line2D([], [], color="#333333", linestyle="dashed", label="chance"))
        if requirement is not None:
            label = f"requirement {requirement:.2f}"
            handles.append(Line2D([], [], color=REQUIREMENT_COLOUR, linestyle="-.", linewidth=1.6, label=label))
        if any(row["shortcut_level"] for row in rows):
            handles.append(Patch(facecolor="#bbbbbb", edgecolor="#ffffff", hatch="///", label="shortcut level"))
        figure.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 3), frameon=False)
    return _svg(figure, salt="kadapt-accuracy-chart", label=ACCURACY_TITLE)


def _draw_requirement(axes, report: dict) -> float | None:
    """The accuracy requirement across the chart (dash-dotted, red), when the report has one; returns it."""
    requirement = _requirement(report)
    if requirement is not None:
        axes.axhline(requirement, color=REQUIREMENT_COLOUR, linestyle="-.", linewidth=1.6, zorder=4)
    return requirement


def _cost_x_limit(report: dict) -> float:
    """About twice the larger of the workload's horizon volume and the largest finite break-even."""
    candidates = [_horizon_queries(report)] + [_finite(row.get("queries")) for row in _break_evens(report)]
    largest = max((value for value in candidates if value is not None and value > 0), default=0.0)
    return min(2 * largest, _MAX_CHART_QUERIES) if largest else 1000.0


_MAX_CHART_QUERIES = 1e15


def _log_axis(report: dict, x_limit: float) -> bool:
    """Whether the volume axis is logarithmic: when a break-even sits under a twentieth of the axis, a linear axis
    would crowd it against the origin (e.g. break-evens at 237 and 900 on an axis to 36,000)."""
    points = [_finite(row.get("queries")) for row in _break_evens(report)]
    points = [value for value in points if value is not None and 0 < value <= x_limit]
    return bool(points) and min(points) < x_limit / 20


def cost_chart_svg(report: dict) -> str:
    """Total cost (one-off + queries x per-query) against query volume, one line per mode, each in its own
    colour and line style, so that modes with nearly the same costs stay apart.

    Break-even points are marked and labelled; a dotted vertical line shows the workload's horizon volume. When
    break-evens would crowd the origin the volume axis is logarithmic (from 1 query). Returns an ``<svg>``
    element, or ``""`` when the report holds no costs.
    """
    costs = _costs(report)
    if not costs:
        return ""
    import matplotlib
    import numpy
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    modes = _modes(report)
    by_mode = {str(cost["mode"]): cost for cost in costs}
    x_limit = _cost_x_limit(report)
    if not all(math.isfinite(_total(cost, x_limit)) for cost in by_mode.values()):
        return ""  # costs past what a float holds: the table below the chart still lists them
    log = _log_axis(report, x_limit)
    volumes = numpy.geomspace(1, x_limit, 64) if log else numpy.array([0.0, x_limit])
    horizon = _horizon_queries(report)
    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=FIGURE_SIZE, layout="constrained")
        axes = figure.subplots()
        for index, (mode, cost) in enumerate(by_mode.items()):
            style = LINE_STYLES[index % len(LINE_STYLES)]
            totals = [_total(cost, volume) for volume in volumes]
            axes.plot(volumes, totals, color=_colour(mode, modes), lw=2.2, linestyle=style, label=mode_label(mode))
        if horizon:
            axes.axvline(horizon, color="#555555", linestyle=":", linewidth=1.5, label="horizon volume")
        _mark_break_evens(axes, report, by_mode, x_limit)
        if log:
            axes.set_xscale("log")
            axes.set_xlim(1, x_limit)
            axes.set_xlabel("Queries (logarithmic scale)")
        else:
            axes.set_xlim(0, x_limit)
            axes.set_xlabel("Queries")
            axes.xaxis.set_major_locator(MaxNLocator(nbins=5))  # long volumes like 16,000 need room
        axes.set_ylim(bottom=0)
        axes.set_ylabel("Total cost (USD)")
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: _volume(value)))
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: _usd(value)))
        axes.grid(color="#e6e6e6")
        axes.set_axisbelow(True)
        axes.legend(loc="upper left", fontsize=9, frameon=False)
    return _svg(figure, salt="kadapt-cost-chart", label=COST_TITLE)


def _mark_break_evens(axes, report: dict, by_mode: dict[str, dict], x_limit: float) -> None:
    """A dot and a label per break-even on the chart; labels stacked upwards so that close points stay legible."""
    marked = 0
    for row in _break_evens(report):
        queries = _finite(row.get("queries"))
        source, target = str(row.get("from", "?")), str(row.get("to", "?"))
        cost = by_mode.get(source) or by_mode.get(target)
        if queries is None or not 0 < queries <= x_limit or cost is None:  # past the chart: in the table
            continue
        y = _total(cost, queries)
        axes.plot(queries, y, marker="o", markersize=8, color="#222222", zorder=5, linestyle="none")
        axes.annotate(
            f"{mode_label(source)} → {mode_label(target)}\n{queries:,.0f} queries",
            (queries, y),
            xytext=(14, 16 + 32 * marked),
            textcoords="offset points",
            fontsize=9,
            arrowprops={"arrowstyle": "-", "color": "#777777", "shrinkA": 0, "shrinkB": 4},
            bbox={"boxstyle": "round,pad=0.25", "facecolor": "#ffffff", "edgecolor": "#bbbbbb"},
        )
        marked += 1


# --- formatting ------------------------------------------------------------------------------------


def _volume(value: float) -> str:
    """A compact axis label for a query volume: 900, 12k, 1.5M."""
    if abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:g}k"
    return f"{value:,.0f}"


def _usd(value: Any) -> str:
    number = _finite(value)
    if number is None:
        return "—"
    if number == 0:
        return "$0"
    if abs(number) >= 100:
        return f"${number:,.0f}"
    if abs(number) >= 1:
        return f"${number:,.2f}"
    decimals = 1 - math.floor(math.log10(abs(number)))  # two significant digits for cents and below
    return f"${number:.{decimals}f}".rstrip("0").rstrip(".")


def _seconds(value: Any) -> str:
    number = _finite(value)
    if number is None:
        return "—"
    if number < 60:
        return f"{number:.1f} s" if number < 10 else f"{number:.0f} s"
    if number < 3600:
        minutes, seconds = divmod(round(number), 60)
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(round(number / 60), 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def _count(value: Any) -> str:
    number = _finite(value)
    return "—" if number is None else f"{number:,.0f}"


def _decimal(value: Any) -> str:
    number = _finite(value)
    return "—" if number is None else f"{number:.2f}"


def _detail(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    if isinstance(value, float):
        return f"{value:,.6g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


# --- the page --------------------------------------------------------------------------------------


def _accuracy_table(report: dict) -> dict:
    rows = _accuracy_rows(report)
    kinds = _kinds(report)
    by_key = {(row["mode"], row["kind"]): row for row in rows}
    modes = _modes(report)
    table = []
    for mode in modes:
        if not any(row["mode"] == mode for row in rows):
            continue
        cells = []
        for kind in kinds:
            row = by_key.get((mode, kind))
            if row is None:
                cells.append(None)
                continue
            correct = row.get("correct")
            cells.append(
                {
                    "text": f"{row['accuracy']:.2f} [{row['low']:.2f}–{row['high']:.2f}] ({_count(row.get('n'))})",
                    "shortcut": row["shortcut_level"],
                    "title": f"{correct} of {row.get('n')} correct" if correct is not None else "",
                }
            )
        table.append({"mode": mode, "colour": _colour(mode, modes), "cells": cells})
    chance = []
    for kind in kinds:
        values = [_finite(row.get("chance")) for row in rows if row["kind"] == kind]
        values = [value for value in values if value is not None]
        chance.append(_decimal(sum(values) / len(values)) if values else "—")
    return {"kinds": kinds, "rows": table, "chance": chance, "any_shortcut": any(r["shortcut_level"] for r in rows)}


def _served(report: dict) -> dict | None:
    """Served accuracy per mode × kind beside MC, MC − served per mode, and sample answers with verdicts;
    None when the report has no served block (every probe MC-only, or measured before served evaluation)."""
    served = report.get("served")
    if not isinstance(served, dict):
        return None
    rows = _accuracy_rows({"results": served.get("results")})
    mc = {(row["mode"], row["kind"]): row for row in _accuracy_rows(report)}
    by_key = {(row["mode"], row["kind"]): row for row in rows}
    kinds, modes = _unique(row["kind"] for row in rows), _unique(row["mode"] for row in rows)
    table = []
    for mode in modes:
        cells = []
        for kind in kinds:
            row, other = by_key.get((mode, kind)), mc.get((mode, kind))
            cells.append(
                {
                    "served": f"{row['accuracy']:.2f} [{row['low']:.2f}–{row['high']:.2f}] ({_count(row.get('n'))})",
                    "mc": f"{other['accuracy']:.2f}" if other else "—",
                }
                if row
                else None
            )
        table.append({"mode": mode, "colour": _colour(mode, _modes(report)), "cells": cells})
    gaps: dict[str, dict[str, str]] = {}
    for row in served.get("overstatement") or []:
        if isinstance(row, dict) and _finite(row.get("gap")) is not None:
            gaps.setdefault(str(row.get("mode")), {})[str(row.get("kind"))] = f"{_finite(row['gap']):+.2f}"
    samples = []
    for mode, items in (served.get("samples") or {}).items():
        answers = [
            {
                "kind": str(item.get("kind", "")),
                "question": str(item.get("question", "")),
                "answer": str(item.get("answer", "")).strip() or "(empty answer)",
                "verdict": "right" if item.get("correct") else "wrong",
                "reason": str(item.get("reason", "")),
            }
            for item in items or []
            if isinstance(item, dict)
        ]
        samples.append({"mode": str(mode), "colour": _colour(str(mode), _modes(report)), "answers": answers})
    return {
        "kinds": kinds,
        "rows": table,
        "gap_kinds": [*kinds, "all"],
        "gaps": [{"mode": mode, "cells": [gaps[mode].get(kind, "—") for kind in [*kinds, "all"]]} for mode in gaps],
        "samples": samples,
        "judge": str(served.get("judge") or "?"),
        "mc_only": _count(served.get("mc_only_probes")),
        "chat_probes": _count(served.get("chat_probes")),
    }


def _forgetting(report: dict) -> list[dict] | None:
    """Per adapter mode: the share of general questions right without and with its adapter, the relative drop
    and a few questions it lost; None when no adapter's forgetting was measured."""
    from kadapt.forgetting import FORGETTING_TOLERANCE

    found = report.get("forgetting")
    if not isinstance(found, dict) or not found:
        return None
    rows = []
    for mode, row in found.items():
        if not isinstance(row, dict) or _finite(row.get("relative_drop")) is None:
            continue
        drop = _finite(row["relative_drop"]) or 0.0
        rows.append(
            {
                "mode": str(mode),
                "colour": _colour(str(mode), _modes(report)),
                "questions": _count(row.get("questions")),
                "base": _decimal(row.get("base_accuracy")),
                "adapter": _decimal(row.get("adapter_accuracy")),
                "drop": f"{drop:.0%}",
                "over": drop > FORGETTING_TOLERANCE,
                "routed": _count(row["routed_to_base"]) if "routed_to_base" in row else "—",
                "alone": _decimal(row.get("adapter_alone_accuracy")) if "adapter_alone_accuracy" in row else "—",
                "alone_drop": f"{_finite(row.get('adapter_alone_drop')):.0%}"
                if _finite(row.get("adapter_alone_drop")) is not None
                else "—",
                "lost": [
                    {"question": str(item.get("question", "")), "answer": str(item.get("answer", "")).strip()}
                    for item in row.get("lost") or []
                    if isinstance(item, dict)
                ],
            }
        )
    return rows or None


def _cost_table(report: dict) -> list[dict]:
    horizon = _horizon_queries(report)
    modes = _modes(report)
    return [
        {
            "mode": str(cost["mode"]),
            "colour": _colour(str(cost["mode"]), modes),
            "one_off_usd": _usd(cost.get("one_off_usd")),
            "per_query_usd": _usd(cost.get("per_query_usd")),
            "one_off_time": _seconds(cost.get("one_off_seconds")),
            "per_query_time": _seconds(cost.get("per_query_seconds")),
            "prompt_tokens": _count(cost.get("prompt_tokens_per_query")),
            "horizon_usd": _usd(_total(cost, horizon)) if horizon is not None else "—",
            "upkeep": _upkeep(cost),
            "details": [(_detail_label(str(k)), _detail(v)) for k, v in (cost.get("details") or {}).items()],
        }
        for cost in _costs(report)
    ]


def _change_rate(report: dict) -> str | None:
    rate = report.get("change_rate") if isinstance(report.get("change_rate"), dict) else None
    per_day = _finite((rate or {}).get("documents_per_day"))
    if per_day is None:
        return None
    return (
        f"{per_day:.2f} documents added, changed or removed per day over the last {_finite(rate.get('days')) or 0:g} "
        f"days ({_count(rate.get('snapshots'))} snapshots, {_count(rate.get('documents'))} documents now)"
    )


def _decision(report: dict) -> dict | None:
    decision = report.get("decision")
    if not isinstance(decision, dict) or not decision.get("mode"):
        return None
    break_even = ""
    if "break_even_queries" in decision:
        queries = _finite(decision["break_even_queries"])
        if queries is not None:
            break_even = f"{queries:,.0f} queries"
        elif decision["mode"] not in {"icl", *FLOOR_MODES}:
            break_even = "never (no query volume makes it cheaper than ICL)"
    return {
        "mode": str(decision["mode"]),
        "colour": _colour(str(decision["mode"]), _modes(report)),
        "policy": decision.get("policy"),
        "rationale": decision.get("rationale") or "",
        "measure": str((report.get("measure") or {}).get("text", "")).removeprefix("Accuracy measure: ").rstrip("."),
        "created_at": human_time(decision.get("created_at")),
        "break_even": break_even,
    }


def _basis(report: dict) -> list[tuple[str, str]]:
    """What the estimates rest on, as (label, sentence) pairs; missing facts are left out."""
    facts = []
    pilot = report.get("pilot") or {}
    if pilot.get("documents") is not None:
        text = f"{_count(pilot['documents'])}"
        if pilot.get("kb_documents") is not None:
            text += f" of {_count(pilot['kb_documents'])}"
        text += " documents"
        if pilot.get("probes") is not None:
            text += f", {_count(pilot['probes'])} probes"
        if _finite(pilot.get("scale")) is not None:
            text += f"; costs scaled ×{_finite(pilot['scale']):g} to the whole knowledge base by token count"
        facts.append(("Pilot sample", text))
    snapshot = report.get("snapshot") or {}
    if snapshot:
        parts = []
        if snapshot.get("id") is not None:
            parts.append(f"#{snapshot['id']}")
        if snapshot.get("documents") is not None:
            parts.append(f"{_count(snapshot['documents'])} documents")
        if snapshot.get("hash"):
            parts.append(f"hash {snapshot['hash']}")
        facts.append(("Snapshot", ", ".join(parts) or "—"))
    if report.get("model"):
        facts.append(("Model", str(report["model"])))
    workload = report.get("workload") or {}
    horizon = _horizon_queries(report)
    if workload.get("queries_per_day") is not None:
        text = f"{_count(workload['queries_per_day'])} queries a day"
        if horizon is not None:
            text += f" over {_count(workload['horizon_days'])} days ({_count(horizon)} queries)"
        facts.append(("Workload", text))
    if workload.get("accuracy_floor") is not None:
        kinds = ", ".join(str(kind) for kind in workload.get("kinds") or [])
        requirement = _decimal(workload["accuracy_floor"]) + " (lower 95% bound)" + (f" on {kinds}" if kinds else "")
        facts.append(("Accuracy requirement", requirement))
    if workload.get("usd_per_hour") is not None:
        facts.append(("Hardware price", f"{_usd(workload['usd_per_hour'])} an hour"))
    return facts


def _context(report: dict, json_href: str | None) -> dict:
    kb = report.get("kb") or {}
    if not isinstance(kb, dict):
        kb = {"slug": str(kb)}
    snapshot = report.get("snapshot") or {}
    horizon = _horizon_queries(report)
    return {
        "kb_title": kb.get("title") or kb.get("slug") or "Knowledge base",
        "kb_slug": kb.get("slug"),
        "generated_at": human_time(report.get("generated_at")),
        "snapshot_id": snapshot.get("id") if isinstance(snapshot, dict) else None,
        "decision": _decision(report),
        "accuracy_chart": Markup(accuracy_chart_svg(report)),
        "cost_chart": Markup(cost_chart_svg(report)),
        "accuracy_title": ACCURACY_TITLE,
        "cost_title": COST_TITLE,
        "accuracy": _accuracy_table(report),
        "served": _served(report),
        "forgetting": _forgetting(report),
        "costs": _cost_table(report),
        "change_rate": _change_rate(report),
        "break_even": [
            {
                "from": row.get("from", "?"),
                "to": row.get("to", "?"),
                "queries": _count(row["queries"]) if _finite(row.get("queries")) is not None else "never",
            }
            for row in _break_evens(report)
        ],
        "basis": _basis(report),
        "horizon_queries": _count(horizon) if horizon is not None else None,
        "requirement": _decimal(_requirement(report)) if _requirement(report) is not None else None,
        "warnings": [str(warning) for warning in report.get("warnings") or []],
        "json_href": json_href,
    }


def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("kadapt", "templates"),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["mode_label"] = mode_label
    return environment


def render_report(report: dict, *, json_href: str | None = "report.json") -> str:
    """The report as one self-contained HTML page; ``json_href`` is where the footer says its JSON is."""
    return _environment().get_template("report.html.j2").render(_context(report, json_href))


def write_report(report: dict, folder: Path, *, stem: str = "report") -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.html`` into ``folder``; each file is whole or absent, never half."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    html_path, json_path = folder / f"{stem}.html", folder / f"{stem}.json"
    html = render_report(report, json_href=json_path.name)
    write_atomic(json_path, json.dumps(report, indent=2, default=str))
    write_atomic(html_path, html)
    return html_path, json_path


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


def write_kb_report(catalog: Catalog, slug: str, settings: Settings | None = None) -> tuple[Path, Path]:
    settings = settings or get_settings()
    return write_report(report_data(catalog, slug), settings.data_dir / "reports" / slug)
