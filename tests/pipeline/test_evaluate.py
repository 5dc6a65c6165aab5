from __future__ import annotations

from types import SimpleNamespace

from kadapt.evaluate import summarize, wilson


def test_wilson_interval_holds_the_estimate_and_narrows_with_n():
    for n in (1, 6, 24, 48, 500):
        for correct in range(0, n + 1, max(1, n // 7)):
            low, high = wilson(correct, n)
            assert 0 <= low <= correct / n <= high <= 1
    assert wilson(0, 0) == (0.0, 1.0)
    wide, narrow = wilson(12, 24), wilson(240, 480)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
    assert abs(wilson(24, 48)[0] - 0.3639) < 1e-3  # 50% of 48: [0.364, 0.636]


def probe(kind, answer, choices=("aa", "bb")):
    return SimpleNamespace(kind=kind, answer_index=answer, choices=list(choices))


def test_summary_flags_results_a_shortcut_would_reach():
    probes = [probe("reversal", index % 2) for index in range(40)]
    always_first = summarize(probes, [0] * 40)["reversal"]
    assert always_first["accuracy"] == 0.5 and always_first["shortcut_level"]
    right = summarize(probes, [p.answer_index for p in probes])["reversal"]
    assert right["accuracy"] == 1.0 and not right["shortcut_level"]
    # unbalanced answers: picking the first choice would score 0.9, so 0.9 is no evidence of knowledge
    skewed = [probe("verbatim", 0 if index < 36 else 1) for index in range(40)]
    result = summarize(skewed, [0] * 40)["verbatim"]
    assert result["best_shortcut"] == 0.9 and result["shortcut_level"]
