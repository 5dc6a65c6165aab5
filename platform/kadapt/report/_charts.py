"""The report's two charts, accuracy per kind and mode and total cost against query volume: inline SVG drawn
with matplotlib."""

from __future__ import annotations

import io
import math
import textwrap

from markupsafe import escape

from kadapt.report._read import (
    _accuracy_rows,
    _break_evens,
    _costs,
    _finite,
    _horizon_queries,
    _kinds,
    _modes,
    _requirement,
    _total,
    _usd,
    _volume,
    mode_label,
)

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
REQUIREMENT_COLOUR = "#a3261d"
# a line style per mode, so that modes whose costs nearly coincide stay told apart (and in greyscale)
LINE_STYLES = ("solid", (0, (6, 3)), (0, (2, 2)), (0, (6, 2, 2, 2)), (0, (1, 3)))
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


def _colour(mode: str, modes: list[str]) -> str:
    if mode in MODE_COLOURS:
        return MODE_COLOURS[mode]
    extras = [m for m in modes if m not in MODE_COLOURS]
    return EXTRA_COLOURS[extras.index(mode) % len(EXTRA_COLOURS)] if mode in extras else EXTRA_COLOURS[0]


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
