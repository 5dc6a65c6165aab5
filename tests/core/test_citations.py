"""The quote picker: which documents an answer cites, and the sentence of each it quotes, verbatim."""

from __future__ import annotations

from kadapt.citations import Passage, cite, supporting_quote, verbatim

LEAVE = (
    "# Leave policy\n\nApplies to all permanent employees from 1 January 2026.\n\n"
    "Every full-time employee receives **27 days of paid annual\nleave** per calendar year, plus public holidays.\n"
    "Up to 5 unused days may be carried over into the first quarter of the next year.\n\n"
    "## Parental leave\n\nBirth parents receive 18 weeks at full pay."
)
BRIDGE = "Orla Vantreight designed the glass footbridge that spans the Kessel Gorge in Norway."
LIGHTHOUSE = "The solar-powered lighthouse on Skerry Vane was built by the engineer Hesper Caldwell."


def passages() -> list[Passage]:
    return [
        Passage(1, "d-light", "lighthouse.md", "Lighthouse", LIGHTHOUSE),
        Passage(2, "d-bridge", "bridge.md", "Bridge", BRIDGE),
        Passage(3, "d-leave", "policies/leave.md", "Leave policy", LEAVE),
    ]


def test_the_quote_is_the_supporting_sentence_verbatim_line_breaks_and_markup_included():
    quote, _ = supporting_quote(LEAVE, "Full-time employees get 27 days of paid annual leave.", "How much leave?")
    expected = "Every full-time employee receives **27 days of paid annual\nleave** per calendar year, "
    expected += "plus public holidays."
    assert quote == expected
    assert quote in LEAVE


def test_the_sentence_with_the_answers_own_terms_wins_over_one_that_echoes_the_question():
    question = "How many unused days of leave may be carried over?"
    quote, _ = supporting_quote(LEAVE, "Up to 5 days.", question)
    assert quote.startswith("Up to 5 unused days")


def test_a_reversed_answer_cites_the_document_that_names_the_person_not_the_one_the_question_resembles():
    question = "Who designed the glass footbridge over the Kessel Gorge?"
    (citation,) = cite(passages(), "Orla Vantreight designed it.", question)
    assert (citation.index, citation.document_id, citation.locator) == (2, "d-bridge", "bridge.md")
    assert citation.quote == BRIDGE


def test_an_answer_naming_two_documents_cites_both_best_supported_first():
    cited = cite(passages(), "Hesper Caldwell built the lighthouse; Orla Vantreight the footbridge.", "Who built what?")
    assert [citation.document_id for citation in cited] == ["d-light", "d-bridge"]
    assert all(citation.quote in {LIGHTHOUSE, BRIDGE} for citation in cited)


def test_an_answer_that_shares_nothing_with_the_documents_cites_nothing():
    assert cite(passages(), "I do not know.", "Who founded Tidewell?") == []
    assert cite(passages(), "", "Who founded Tidewell?") == []
    assert cite([], "Orla Vantreight", "Who?") == []


def test_at_most_the_limit_is_cited():
    many = [Passage(index, f"d{index}", f"{index}.md", "", BRIDGE) for index in range(1, 6)]
    assert [citation.index for citation in cite(many, "Orla Vantreight", limit=2)] == [1, 2]


def test_verbatim_refuses_what_the_text_does_not_say():
    start = "Orla Vantreight designed the glass footbridge"
    assert verbatim(BRIDGE, start) == start
    assert verbatim(BRIDGE, "Orla Vantreight built the glass footbridge") is None
    assert verbatim(BRIDGE, "   ") is None
    # regex characters in a sentence are matched literally
    assert verbatim("Costs (in EUR) rose 3.5% [est.].", "(in EUR) rose 3.5% [est.].") == "(in EUR) rose 3.5% [est.]."
