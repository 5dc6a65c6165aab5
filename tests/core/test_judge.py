"""The judge of free-form answers: crafted replies against accepted answers and distractors, and the
plugin hook that lets another judge (an LLM one) replace the built-in string judge."""

from __future__ import annotations

import pytest

from kadapt.catalog import Probe
from kadapt.errors import InvalidInput
from kadapt.hookspecs import hookimpl
from kadapt.judge import StringJudge, Verdict, get_judge, judge_probe, normalise, token_f1
from kadapt.plugins import Plugins
from tests.conftest import clear_caches

JUDGE = StringJudge()
# "Who painted the lighthouse mural?" -> Ann Whitlock; the other choices are the distractors
ACCEPTED = ["Ann Whitlock", "Annie Whitlock"]
DISTRACTORS = ["Bruno Keller", "Chiara Sato"]


def rule(answer: str, accepted=ACCEPTED, distractors=DISTRACTORS) -> Verdict:
    return JUDGE.judge(answer, accepted=accepted, distractors=distractors, question="Who painted the mural?")


def test_the_right_answer_in_any_case_and_punctuation_is_correct():
    verdict = rule("The mural was painted by ANN WHITLOCK, in 2019.")
    assert verdict.correct and verdict.matched == "Ann Whitlock" and verdict.distractors_named == []


def test_an_alias_of_the_answer_is_correct():
    verdict = rule("I believe it was Annie Whitlock.")
    assert verdict.correct and verdict.matched == "Annie Whitlock"


def test_a_wrong_answer_is_wrong():
    verdict = rule("The town council commissioned it from a local school.")
    assert not verdict.correct and verdict.matched is None
    assert "no accepted answer" in verdict.reason


def test_naming_a_distractor_is_wrong_and_says_which():
    verdict = rule("Bruno Keller painted it.")
    assert not verdict.correct and verdict.distractors_named == ["Bruno Keller"]
    assert "Bruno Keller" in verdict.reason


def test_naming_the_answer_and_a_distractor_is_wrong():
    verdict = rule("Either Ann Whitlock or Chiara Sato painted it.")
    assert not verdict.correct
    assert verdict.matched == "Ann Whitlock" and verdict.distractors_named == ["Chiara Sato"]


def test_a_near_name_does_not_match():
    # whole words only: "Annabel" is not "Ann", "Whitlocks" is not "Whitlock"
    assert not rule("Ann Whitlocks painted it.").correct
    assert not JUDGE.judge("Annabel did.", accepted=["Ann"], distractors=["Bruno"]).correct
    assert JUDGE.judge("Ann did.", accepted=["Ann"], distractors=["Bruno"]).correct


def test_a_distractor_inside_the_accepted_answer_is_not_named():
    verdict = JUDGE.judge("It was Ann Smith Jr.", accepted=["Ann Smith Jr"], distractors=["Ann Smith"])
    assert verdict.correct and verdict.distractors_named == []
    assert not JUDGE.judge("It was Ann Smith.", accepted=["Ann Smith Jr"], distractors=["Ann Smith"]).correct


def test_a_longer_answer_in_other_words_counts_by_token_f1():
    accepted = ["the master mixologist who crafted the Nebula Cocktail"]
    distractors = ["the harbour pilot of Port Ellery"]
    verdict = JUDGE.judge(
        "Liam Blackstone is a master mixologist. He created the Nebula Cocktail.",
        accepted=accepted,
        distractors=distractors,
    )
    assert verdict.correct and verdict.matched == accepted[0] and verdict.f1 >= 0.5
    assert "token F1" in verdict.reason
    unrelated = JUDGE.judge("He is a retired schoolteacher.", accepted=accepted, distractors=distractors)
    assert not unrelated.correct and unrelated.f1 < 0.5
    # overlap alone does not save a reply that also names a wrong answer
    both = JUDGE.judge(
        "A master mixologist who crafted the Nebula Cocktail, or the harbour pilot of Port Ellery.",
        accepted=accepted,
        distractors=distractors,
    )
    assert not both.correct and both.distractors_named == distractors


def test_token_f1_is_not_used_for_short_answers():
    # one word of two in common is F1 0.5, but "Ann Jones" is a different person
    assert token_f1("Ann Jones", "Ann Whitlock") == 0.5
    assert not rule("Ann Jones").correct


@pytest.mark.parametrize(
    ("answer", "accepted", "correct"),
    [
        # a served answer of the syllogism benchmark: three words of "no trond are zeet", the opposite claim
        ("The trond are zeet.", ["no zeet are trond", "no trond are zeet"], False),
        ("No trond are zeet.", ["no zeet are trond", "no trond are zeet"], True),
        ("Not all glon are femp.", ["all glon are femp"], False),
        ("Staff don't get 27 days of paid leave.", ["staff get 27 days of paid leave"], False),
        ("Staff get 27 days of annual leave.", ["staff get 27 days of paid leave"], True),
        ("Staff do not get 27 days of paid leave.", ["staff do not get 27 days of paid leave"], True),
        ("It isn't Paris.", ["Paris"], False),
        ("Staff can't get 27 days of paid leave.", ["staff get 27 days of paid leave"], False),
        # a denial a few linking words before the answer
        ("It can't be Paris.", ["Paris"], False),
        ("The office is not in Paris.", ["Paris"], False),
        ("She was never based in Oslo.", ["Oslo"], False),
        ("It is not only Paris: Lyon too.", ["Paris"], True),
        ("It is not Lyon; the office is in Paris.", ["Paris"], True),
        ("Staff never complain about the office in Paris.", ["Paris"], True),
        ("It cannot be in Paris.", ["Paris"], False),
        # a denial in an earlier sentence or clause denies nothing after it
        ("Certainly not. In Paris.", ["Paris"], True),
        ("Maybe not; in Paris", ["Paris"], True),
        ("No, never. In Paris.", ["Paris"], True),
        ("Surely not! Located in Paris.", ["Paris"], True),
        ("The figure is No. 27.", ["No. 27"], True),
        # a "no" that denies nothing
        ("No, Paris.", ["Paris"], True),
        ("The form is No. 27.", ["27"], True),
        ("Reports are due by Friday at noon.", ["reports are due no later than Friday at noon"], True),
        ("Glon are all femp, but not every femp is a glon.", ["all glon are femp"], True),
        ("Williams founded Acme Corporation in Ohio.", ["John T Williams founded Acme Corporation"], True),
    ],
)
def test_a_reply_that_negates_the_answer_does_not_give_it(answer, accepted, correct):
    assert JUDGE.judge(answer, accepted=accepted, distractors=[]).correct is correct


@pytest.mark.parametrize(
    ("answer", "correct"),
    [
        ("It is in Paris, not Oslo.", True),
        ("Not in Oslo, in Paris.", True),
        ("It is not Lyon but Paris.", True),
        ("Paris or Oslo.", False),
        ("Not Paris but Oslo.", False),
    ],
)
def test_a_distractor_the_reply_denies_is_not_named(answer, correct):
    assert JUDGE.judge(answer, accepted=["Paris"], distractors=["Oslo", "Lyon"]).correct is correct


@pytest.mark.parametrize(
    ("answer", "accepted", "correct"),
    [
        # served answers of the syllogism benchmark that share words with the conclusion but not its terms
        ("No nufimp.", ["no nufimp are glaide", "no glaide are nufimp"], False),
        ("All plait are zakeesh.", ["all plaitip are zakeesh"], False),
        ("The conclusion I reached is that all zet are plak.", ["all kaizit are plak"], False),
        # the terms in other words
        ("The conclusion that snend are vemp.", ["all snend are vemp"], True),
        ("Every glon is a femp.", ["all glon are femp"], True),
        # a longer answer may lose a term in paraphrase
        ("Staff get 27 days of annual leave.", ["staff get 27 days of paid leave"], True),
    ],
)
def test_the_f1_route_needs_the_answers_key_terms(answer, accepted, correct):
    assert JUDGE.judge(answer, accepted=accepted, distractors=[]).correct is correct


def test_normalising_drops_case_punctuation_articles_and_spaces():
    assert normalise("  The  Nebula-Cocktail, an   Ann's!") == "nebula cocktail ann s"


def test_an_empty_reply_is_wrong_and_a_probe_without_answers_cannot_be_judged():
    assert not rule("  ...  ").correct
    with pytest.raises(InvalidInput, match="accepted answers"):
        JUDGE.judge("Ann", accepted=[], distractors=[])


def test_judge_probe_uses_the_probes_other_choices_as_distractors(kadapt_env):
    probe = Probe(
        id=7,
        question="The mural was painted by",
        choices=["Bruno Keller", "Ann Whitlock", "Chiara Sato"],
        answer_index=1,
        chat_question="Who painted the mural?",
        answers=["Ann Whitlock"],
    )
    assert judge_probe(probe, "Ann Whitlock.").correct
    assert judge_probe(probe, "Chiara Sato.").distractors_named == ["Chiara Sato"]
    probe.chat_question = None
    with pytest.raises(InvalidInput, match="probe 7 is MC-only"):
        judge_probe(probe, "Ann Whitlock.")


class _LenientJudge:
    name = "lenient"
    description = "A stand-in for an LLM judge: everything is right."

    def judge(self, answer, *, accepted, distractors, question=""):
        return Verdict(True, "lenient")


class _JudgePlugin:
    @hookimpl
    def register_judges(self, register):
        register(_LenientJudge())


def test_kadapt_judge_picks_a_registered_judge_and_names_the_installed_ones(kadapt_env, monkeypatch):
    plugins = Plugins()
    assert isinstance(get_judge(plugins=plugins), StringJudge)  # the default, registered by a built-in plugin
    assert "string" in next(info for info in plugins.describe() if info.name == "probes").registers["register_judges"]
    name = plugins.register(_JudgePlugin(), name="lenient-judge")
    try:
        monkeypatch.setenv("KADAPT_JUDGE", "lenient")
        clear_caches()
        assert get_judge(plugins=plugins).judge("anything", accepted=["x"], distractors=[]).reason == "lenient"
        monkeypatch.setenv("KADAPT_JUDGE", "gpt-judge")
        clear_caches()
        with pytest.raises(InvalidInput, match=r"no judge 'gpt-judge' \(KADAPT_JUDGE\); installed: lenient, string"):
            get_judge(plugins=plugins)
    finally:
        plugins.unregister(name)
        clear_caches()
