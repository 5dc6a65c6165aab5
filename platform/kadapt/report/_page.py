"""The report as one self-contained HTML page (Jinja templates) next to its JSON."""

from __future__ import annotations

import json
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from kadapt.catalog import Catalog
from kadapt.paths import write_atomic
from kadapt.report._charts import ACCURACY_TITLE, COST_TITLE, _colour, accuracy_chart_svg, cost_chart_svg
from kadapt.report._read import (
    FLOOR_MODES,
    _accuracy_rows,
    _break_evens,
    _costs,
    _count,
    _decimal,
    _detail,
    _detail_label,
    _finite,
    _horizon_queries,
    _kinds,
    _modes,
    _requirement,
    _seconds,
    _total,
    _unique,
    _upkeep,
    _usd,
    mode_label,
)
from kadapt.report._shape import report_data
from kadapt.settings import Settings, get_settings
from kadapt.text import human_time

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


def write_kb_report(catalog: Catalog, slug: str, settings: Settings | None = None) -> tuple[Path, Path]:
    settings = settings or get_settings()
    return write_report(report_data(catalog, slug), settings.data_dir / "reports" / slug)
