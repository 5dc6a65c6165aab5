"""The report's data read defensively (a report of an older version may lack any part), and its numbers
formatted for the page."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

FLOOR_MODES = frozenset({"floor", "base"})
BASELINE_LABEL = "no documents (baseline)"  # the floor mode: the base model answering without the KB
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
