"""The cost/generalization report of a knowledge base: one self-contained HTML page plus its JSON.

The page needs nothing from the network (no fonts, scripts or styles from elsewhere) so it can be
mailed, archived or opened from a file share; its two charts are inline SVG drawn with matplotlib.

``kadapt report`` writes the data (:class:`Report`, :func:`report_data`) as JSON next to the page
(:func:`render_report`, :func:`write_report`), ``GET /v1/kbs/{kb}/report`` answers it, and its JSON Schema is
kept in docs/report.schema.json (a test fails when the two part ways).
"""

from kadapt.report._charts import accuracy_chart_svg, cost_chart_svg
from kadapt.report._page import render_report, write_kb_report, write_report
from kadapt.report._read import mode_label
from kadapt.report._shape import (
    SAMPLES_HIDDEN,
    AccuracyRow,
    BreakEvenRow,
    CostRow,
    Report,
    ReportKB,
    ReportSnapshot,
    ServedResults,
    build_report,
    report_data,
    without_samples,
)

__all__ = [
    "SAMPLES_HIDDEN",
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
    "mode_label",
    "render_report",
    "report_data",
    "without_samples",
    "write_kb_report",
    "write_report",
]
