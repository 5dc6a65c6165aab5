"""Text tidying strips trailing blanks per line in linear time (finding 5: the old regex was quadratic)."""

import re

from kadapt.parsing import tidy_text


def _old(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[ \t\u00a0]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def test_tidy_gives_what_the_regex_gave():
    for text in ["a  \nb\t\n\n\n\nc\u00a0 ", " x \r\n y \r z ", "", "\n\n", "one\u00a0\u00a0\ntwo"]:
        assert tidy_text(text) == _old(text)


def test_a_long_run_of_spaces_is_tidied():
    text = "start" + " " * 200_000 + "end\n" + " " * 200_000 + "\nlast"
    assert tidy_text(text) == "start" + " " * 200_000 + "end\n\nlast"
