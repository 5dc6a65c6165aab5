"""Regenerate the sample PDF and DOCX documents (run once; the outputs are committed).

python samples/make_binary_samples.py
"""

from pathlib import Path

import docx
from fpdf import FPDF

HERE = Path(__file__).parent / "handbook"

TRAVEL = [
    ("Travel policy", None),
    (
        "Booking",
        "All business travel is booked through the travel desk in Navan, at least 14 days ahead "
        "where possible. Trains are preferred for trips under 600 km; within Europe, flights are booked in "
        "economy class.",
    ),
    (
        "Hotels",
        "Hotels up to EUR 160 per night are approved automatically; EUR 210 in London, Paris and "
        "Zurich. More expensive stays need approval from your director.",
    ),
    (
        "Per diem",
        "Employees travelling abroad receive a daily allowance of EUR 45 for meals, paid with "
        "the next salary. The allowance is not paid when meals are provided by the event or client.",
    ),
    (
        "Insurance",
        "Business travel is insured worldwide by the company's policy with Allianz; the "
        "emergency number is printed on the back of your employee badge.",
    ),
]

BENEFITS = [
    ("Benefits overview", None),
    (
        "Pension",
        "Northwind Robotics pays 8% of base salary into the company pension plan with Brand New "
        "Day; employees contribute 4%. Enrolment is automatic after the first month.",
    ),
    (
        "Learning budget",
        "Each employee has a learning budget of EUR 1,500 per year for courses, books and "
        "conferences. Unused budget does not carry over. Request it in the learning portal.",
    ),
    (
        "Mobility",
        "Employees receive a public transport card (NS Business Card) or a bike lease through "
        "Lease a Bike, up to EUR 2,500 of bike value.",
    ),
    (
        "Wellbeing",
        "Free sessions with OpenUp psychologists, up to 10 per year, are confidential and booked "
        "directly in the OpenUp app.",
    ),
]


def make_pdf(path: Path) -> None:
    pdf = FPDF()
    pdf.set_title(TRAVEL[0][0])
    pdf.add_page()
    pdf.set_font("helvetica", "B", 18)
    pdf.cell(0, 12, TRAVEL[0][0], new_x="LMARGIN", new_y="NEXT")
    for heading, body in TRAVEL[1:]:
        pdf.set_font("helvetica", "B", 13)
        pdf.cell(0, 10, heading, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", "", 11)
        pdf.multi_cell(0, 6, body)
        pdf.ln(2)
    pdf.output(str(path))


def make_docx(path: Path) -> None:
    document = docx.Document()
    document.core_properties.title = BENEFITS[0][0]
    document.add_heading(BENEFITS[0][0], level=0)
    for heading, body in BENEFITS[1:]:
        document.add_heading(heading, level=1)
        document.add_paragraph(body)
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "Benefits contact"
    table.rows[0].cells[1].text = "people@northwind.example"
    document.save(str(path))


if __name__ == "__main__":
    make_pdf(HERE / "policies" / "travel-policy.pdf")
    make_docx(HERE / "benefits-overview.docx")
