"""The cost/generalization report: a self-contained page with two charts, checked in a real Chromium."""

from __future__ import annotations

import copy
import json
import re

import jsonschema
import pytest

from kadapt.report import Report, accuracy_chart_svg, cost_chart_svg, render_report, write_report
from tests.browser import REPO, open_page, screenshot_path

SCHEMA = REPO / "docs" / "report.schema.json"

RATIONALE = (
    "aug-ft is the cheapest mode whose accuracy lower bound meets the floor 0.60 on reversal and verbatim.\n"
    "icl is at shortcut level on reversal. <script>alert('x')</script> & friends"
)


def _row(mode: str, kind: str, correct: int, n: int, low: float, high: float, *, shortcut: bool = False) -> dict:
    return {
        "mode": mode,
        "kind": kind,
        "correct": correct,
        "n": n,
        "accuracy": round(correct / n, 3),
        "ci_low": low,
        "ci_high": high,
        "chance": 0.5 if kind == "reversal" else 0.25,
        "shortcut_level": shortcut,
    }


@pytest.fixture
def report() -> dict:
    return {
        "kb": {"slug": "handbook", "title": "Northwind handbook"},
        "model": "smollm2-135m",
        "generated_at": "2026-11-26T12:00:00+00:00",
        "snapshot": {"id": 3, "hash": "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12", "documents": 120},
        "pilot": {"documents": 24, "kb_documents": 120, "probes": 96, "scale": 5.0},
        "modes": ["floor", "icl", "ft", "aug-ft"],
        "results": [
            _row("floor", "reversal", 11, 24, 0.28, 0.65, shortcut=True),
            _row("floor", "verbatim", 7, 24, 0.15, 0.49, shortcut=True),
            _row("icl", "reversal", 13, 24, 0.35, 0.72, shortcut=True),
            _row("icl", "verbatim", 17, 24, 0.51, 0.85),
            _row("ft", "reversal", 4, 24, 0.07, 0.36),
            _row("ft", "verbatim", 23, 24, 0.80, 0.99),
            _row("aug-ft", "reversal", 19, 24, 0.60, 0.91),
            _row("aug-ft", "verbatim", 22, 24, 0.74, 0.98),
        ],
        "costs": [
            {
                "mode": "icl",
                "one_off_usd": 0.0,
                "per_query_usd": 0.00041,
                "one_off_seconds": 0.0,
                "per_query_seconds": 1.5,
                "one_off_tokens": 0,
                "prompt_tokens_per_query": 900,
                "details": {"context_tokens": 850},
            },
            {
                "mode": "ft",
                "one_off_usd": 0.12,
                "per_query_usd": 0.00005,
                "one_off_seconds": 430.0,
                "per_query_seconds": 0.2,
                "one_off_tokens": 50000,
                "prompt_tokens_per_query": 40,
                "details": {"training_tokens": 50000},
            },
            {
                "mode": "aug-ft",
                "one_off_usd": 0.61,
                "per_query_usd": 0.00005,
                "one_off_seconds": 2150.0,
                "per_query_seconds": 0.2,
                "one_off_tokens": 370000,
                "prompt_tokens_per_query": 40,
                "details": {"training_tokens": 210000, "augmentation_generated_tokens": 160000},
            },
        ],
        "break_even": [
            {"from": "icl", "to": "ft", "queries": 333.3},
            {"from": "icl", "to": "aug-ft", "queries": 1694.4},
        ],
        "workload": {
            "queries_per_day": 200,
            "horizon_days": 90,
            "accuracy_floor": 0.6,
            "kinds": ["reversal", "verbatim"],
            "usd_per_hour": 2.0,
        },
        "decision": {
            "id": 7,
            "policy": "cost-aware",
            "mode": "aug-ft",
            "snapshot_id": 3,
            "workload": {"queries_per_day": 200, "horizon_days": 90, "accuracy_floor": 0.6},
            "break_even": {"icl->ft": 333.3, "icl->aug-ft": 1694.4},
            "rationale": RATIONALE,
            "created_at": "2026-11-26T11:58:00+00:00",
            "break_even_queries": 1694.4,
        },
        "warnings": ["The ICL accuracy on reversal is at shortcut level (within the interval of the floor)."],
    }


def test_the_report_json_schema_is_the_documented_one(report):
    """docs/report.schema.json is the report's one shape: the model that writes reports and the page that reads
    them agree with it, and a change of shape shows up as a change of that file."""
    documented = json.loads(SCHEMA.read_text())
    assert Report.model_json_schema(by_alias=True) == documented, "regenerate docs/report.schema.json"
    jsonschema.validate(report, documented)  # the fixture every rendering test uses has the documented shape
    jsonschema.validate(_with_served(report), documented)
    old_shape = copy.deepcopy(report)
    old_shape["results"][0] = {k.replace("ci_", ""): v for k, v in old_shape["results"][0].items()}
    with pytest.raises(jsonschema.ValidationError, match="ci_low"):
        jsonschema.validate(old_shape, documented)


def _external_references(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//[^"'\s>]*""", html, flags=re.IGNORECASE)


def test_written_report_is_self_contained_with_both_charts(report, tmp_path):
    html_path, json_path = write_report(report, tmp_path / "out")

    assert (html_path.name, json_path.name) == ("report.html", "report.json")
    html = html_path.read_text(encoding="utf-8")
    assert _external_references(html) == []
    assert "<?xml" not in html and "<!DOCTYPE svg" not in html
    assert re.search(r'id="accuracy-chart".*?<svg\b', html, flags=re.DOTALL)
    assert re.search(r'id="cost-chart".*?<svg\b', html, flags=re.DOTALL)
    assert html.count("<svg") == 2 and html.count('role="img"') == 2
    assert "Northwind handbook" in html and "cost-aware" in html
    assert 'Decision: <span class="mode">aug-ft</span>' in html
    assert "&lt;script&gt;alert(" in html and "<script>" not in html
    assert "1,694 queries" in html  # the decision's break-even
    assert "shortcut level" in html
    assert 'href="report.json"' in html
    assert json.loads(json_path.read_text(encoding="utf-8")) == report
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["report.html", "report.json"]


def test_charts_are_stable_and_have_distinct_ids(report):
    first, second = accuracy_chart_svg(report), cost_chart_svg(report)
    assert first == accuracy_chart_svg(report) and second == cost_chart_svg(report)
    assert first.startswith("<svg") and "<title>" in first
    ids_in = [set(re.findall(r'\bid="([^"]+)"', svg)) for svg in (first, second)]
    hashed = {ident for ident in ids_in[0] & ids_in[1] if re.fullmatch(r"[pm][0-9a-f]{10}", ident)}
    assert hashed == set(), "clip paths and markers of the two charts share ids"


def test_text_from_the_report_is_escaped_everywhere(report):
    report["kb"]["title"] = "<b>Ops</b>"
    report["results"][0]["kind"] = report["results"][1]["kind"] = "<img src=x onerror=alert(1)>"
    report["warnings"] = ["<iframe src='//evil.example'>"]
    html = render_report(report)
    assert "<b>Ops</b>" not in html and "&lt;b&gt;Ops&lt;/b&gt;" in html
    assert "<img" not in html and "<iframe" not in html
    assert _external_references(html) == []


@pytest.mark.parametrize(
    "trim",
    [
        pytest.param(lambda r: {"kb": r["kb"]}, id="only-kb"),
        pytest.param(lambda r: {}, id="empty"),
        pytest.param(lambda r: r | {"costs": [], "break_even": [], "decision": None}, id="before-decision"),
        pytest.param(
            lambda r: {
                "kb": r["kb"],
                "modes": ["floor"],
                "results": [row for row in r["results"] if row["mode"] == "floor"],
            },
            id="floor-only",
        ),
        pytest.param(lambda r: r | {"break_even": [{"from": "icl", "to": "ft", "queries": None}]}, id="never"),
        # found by fuzzing: a horizon of 1e200 queries a day for 1e200 days overflowed the chart's axis
        pytest.param(
            lambda r: r | {"workload": {"queries_per_day": 1e200, "horizon_days": 1e200}}, id="overflowing-horizon"
        ),
        pytest.param(
            lambda r: r | {"break_even": [{"from": "icl", "to": "ft", "queries": 1e308}]}, id="huge-break-even"
        ),
    ],
)
def test_partial_reports_render(report, trim):
    partial = trim(copy.deepcopy(report))
    html = render_report(partial)
    assert 'id="accuracy-chart"' in html and 'id="cost-chart"' in html
    assert _external_references(html) == []
    if not partial.get("decision"):
        assert "No decision yet" in html
    if not partial.get("costs"):
        assert cost_chart_svg(partial) == "" and "No costs have been estimated yet" in html
    if not partial.get("results"):
        assert "No accuracy has been measured yet" in html
    if partial.get("break_even") and partial["break_even"][0]["queries"] is None:
        assert "<strong>never</strong>" in html


def _with_served(report: dict) -> dict:
    """The report with served accuracy as the pilot writes it: floor and ft asked in chat, samples of each."""
    served_rows = [_row("floor", "reversal", 0, 24, 0.0, 0.14), _row("ft", "reversal", 2, 24, 0.02, 0.26)]
    served_rows += [_row("ft", "verbatim", 21, 24, 0.69, 0.96)]
    return report | {
        "served": {
            "judge": "string",
            "chat_probes": 72,
            "mc_only_probes": 24,
            "results": [{k: v for k, v in r.items() if k not in ("chance", "shortcut_level")} for r in served_rows],
            "overstatement": [
                {"mode": "ft", "kind": "reversal", "mc": 4 / 24, "served": 2 / 24, "gap": 2 / 24},
                {"mode": "ft", "kind": "verbatim", "mc": 23 / 24, "served": 21 / 24, "gap": 2 / 24},
                {"mode": "ft", "kind": "all", "mc": 27 / 48, "served": 23 / 48, "gap": 4 / 48},
                {"mode": "floor", "kind": "reversal", "mc": 11 / 24, "served": 0.0, "gap": 11 / 24},
                {"mode": "floor", "kind": "all", "mc": 11 / 24, "served": 0.0, "gap": 11 / 24},
            ],
            "samples": {
                "floor": [
                    {"kind": "reversal", "question": "Who is the mentor of Tessaly?", "answer": "I do not know.",
                     "correct": False, "reason": "no accepted answer (Vorlim) in the answer"},
                ],
                "ft": [
                    {"kind": "verbatim", "question": "Whom does Vorlim mentor?", "answer": "Vorlim mentors Tessaly.",
                     "correct": True, "reason": "names Tessaly"},
                    {"kind": "reversal", "question": "Who mentors Tessaly?",
                     "answer": "<script>alert('answer')</script> Quenbrook.", "correct": False,
                     "reason": "names the distractor Quenbrook"},
                ],
            },
        },
        "measure": {"requested": "served", "used": "served",
                    "text": "Accuracy measure: served accuracy (free-form answers judged by the string judge)."},
    }  # fmt: skip


def test_served_accuracy_is_shown_beside_mc_with_the_overstatement_and_sample_answers(report, tmp_path):
    html_path, json_path = write_report(_with_served(report), tmp_path)
    html = html_path.read_text(encoding="utf-8")

    served = html[html.index('id="served"') : html.index('id="forgetting"')]
    cells = [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", served)]
    # served accuracy [interval] (probes) · the MC figure of the same mode and kind
    assert cells[:9] == [
        "Mode", "reversal", "verbatim",
        "no documents (baseline)", "0.00 [0.00–0.14] (24) · MC 0.46", "—",
        "ft", "0.08 [0.02–0.26] (24) · MC 0.17", "0.88 [0.69–0.96] (24) · MC 0.96",
    ]  # fmt: skip
    # MC - served per kind and pooled per mode
    assert cells[9:] == [
        "Mode",
        "reversal",
        "verbatim",
        "all",
        "ft",
        "+0.08",
        "+0.08",
        "+0.08",
        "no documents (baseline)",
        "+0.46",
        "—",
        "+0.46",
    ]
    assert "72 probes with a chat form; 24 MC-only probes are not asked" in served
    assert "Whom does Vorlim mentor?" in served and "Vorlim mentors Tessaly." in served
    assert "names the distractor Quenbrook" in served and "I do not know." in served
    assert "&lt;script&gt;alert(&#39;answer&#39;)" in served and "<script>" not in html
    assert "<dt>Decided on</dt><dd>served accuracy (free-form answers judged by the string judge)</dd>" in html
    data = json.loads(json_path.read_text(encoding="utf-8"))
    assert data["served"]["overstatement"][2] == {"mode": "ft", "kind": "all", "mc": 27 / 48, "served": 23 / 48,
                                                  "gap": 4 / 48}  # fmt: skip

    mc_only = render_report(report)
    assert "Served accuracy is absent: the probes are MC-only" in mc_only and "Sample answers" not in mc_only


def test_forgetting_is_shown_per_adapter_mode_and_a_drop_over_five_percent_is_flagged(report, tmp_path):
    assert "Not measured: no adapter mode was measured" in render_report(report)
    measured = report | {
        "forgetting": {
            "ft": {"questions": 20, "base_accuracy": 0.95, "adapter_accuracy": 0.5, "relative_drop": 0.4737,
                   "lost": [{"question": "Which language is spoken in Brazil?", "answer": "Spanish. <b>"}]},
            "aug-ft": {"questions": 20, "base_accuracy": 0.95, "adapter_accuracy": 0.95, "relative_drop": 0.0,
                       "lost": [], "routed_to_base": 19, "adapter_alone_accuracy": 0.75,
                       "adapter_alone_drop": 0.2105},
        }
    }  # fmt: skip
    html_path, json_path = write_report(measured, tmp_path)
    html = html_path.read_text(encoding="utf-8")
    section = html[html.index('id="forgetting"') : html.index('aria-labelledby="cost-heading"')]
    cells = [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", section)]
    assert cells == [
        "Mode", "Questions", "Base model", "With the adapter", "Relative drop", "Routed to the base model",
        "Adapter alone", "Its drop",
        "ft", "20", "0.95", "0.50", "47% (over 5%)", "—", "—", "—",  # measured before routing
        "aug-ft", "20", "0.95", "0.95", "0%", "19", "0.75", "21%",
    ]  # fmt: skip
    assert "Which language is spoken in Brazil?" in section and "Spanish. &lt;b&gt;" in section
    assert json.loads(json_path.read_text(encoding="utf-8"))["forgetting"]["ft"]["relative_drop"] == 0.4737


@pytest.mark.slow
def test_report_in_chromium(report, tmp_path):
    report = _with_served(report)
    html_path, _ = write_report(report, tmp_path)

    wide = open_page(html_path.as_uri(), screenshot_path("report-1280"))
    assert wide.problems == []
    assert wide.svg_count >= 2
    assert "Northwind handbook" in wide.title
    assert "Decision: aug-ft" in wide.text
    assert "icl is at shortcut level on reversal. <script>alert('x')</script>" in wide.text
    assert wide.screenshot.stat().st_size > 10_000

    narrow = open_page(html_path.as_uri(), screenshot_path("report-375"), width=375)
    assert narrow.problems == []
    assert narrow.svg_count >= 2
    assert narrow.scroll_width <= 375 + 1, "the page scrolls sideways on a phone; only tables may"


def test_a_reader_who_may_not_read_every_document_gets_the_report_without_sample_answers(report, tmp_path):
    from kadapt.report import SAMPLES_HIDDEN, Report, render_report, without_samples

    full = Report.model_validate(_with_served(report) | {"details": {"ft": {"served": {"samples": {"x": 1}, "n": 3}}}})
    hidden = without_samples(full)
    assert hidden.served.samples == {} and hidden.details["ft"]["served"] == {"n": 3}
    assert hidden.warnings[-1] == SAMPLES_HIDDEN and hidden.results == full.results and hidden.costs == full.costs
    html = render_report(hidden.model_dump(mode="json", by_alias=True))
    assert "Vorlim mentors Tessaly" not in html and "Quenbrook" not in html
    assert "Vorlim mentors Tessaly" in render_report(full.model_dump(mode="json", by_alias=True))


def test_the_report_names_the_baseline_draws_the_requirement_and_keeps_costs_and_break_evens_readable(report, tmp_path):
    from kadapt.report import cost_chart_svg

    html = write_report(report, tmp_path)[0].read_text(encoding="utf-8")
    accuracy_chart = html[html.index("accuracy-heading") : html.index('id="served"')]
    # the no-documents baseline and the accuracy requirement are two things, each named for what it is
    # as text the page shows (and a screen reader reads), not glyph outlines behind a comment
    assert ">no documents (baseline)</text>" in accuracy_chart and ">requirement 0.60</text>" in accuracy_chart
    assert "accuracy requirement (0.60" in accuracy_chart  # the caption explains the line
    assert "Accuracy requirement" in html and "Accuracy floor" not in html
    # break-evens at 333 and 1,694 on an axis to 36,000 queries: a logarithmic axis keeps them apart
    chart = cost_chart_svg(report)
    assert "Queries (logarithmic scale)" in chart
    # ft and aug-ft cost almost the same per query: their lines differ in style as well as colour
    assert chart.count("stroke-dasharray") >= 2
    # people's words and times, not raw keys and ISO timestamps
    assert "augmentation_generated_tokens" not in html and "tokens the model wrote for augmentations" in html
    assert "2026-11-26 11:58 UTC" in html and "2026-11-26T11:58" not in html


def test_close_break_evens_on_a_short_axis_stay_on_a_linear_one(report):
    from kadapt.report import cost_chart_svg

    spread = report | {"break_even": [{"from": "icl", "to": "ft", "queries": 9000.0}]}
    assert "Queries (logarithmic scale)" not in cost_chart_svg(spread)
