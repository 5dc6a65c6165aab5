"""A chat request's decoding settings: a request that sets nothing gets a one-line answer; its own settings win."""

from __future__ import annotations

import pytest

from kadapt.errors import InvalidInput
from kadapt.serving import DEFAULT_MAX_TOKENS, chat_params
from kadapt.settings import Settings


def test_a_request_that_sets_neither_stop_nor_max_tokens_ends_at_the_first_line():
    params = chat_params(Settings())
    assert (params.stop, params.max_tokens) == (("\n",), DEFAULT_MAX_TOKENS)


@pytest.mark.parametrize(
    ("request_settings", "stop", "max_tokens"),
    [
        ({"max_tokens": 40}, (), 40),  # a length of its own: no stop it did not ask for
        ({"stop": "END"}, ("END",), DEFAULT_MAX_TOKENS),
        ({"stop": []}, (), DEFAULT_MAX_TOKENS),  # an explicit empty stop turns the default off
        ({"stop": ["a", "b"], "max_tokens": 7}, ("a", "b"), 7),
    ],
)
def test_the_requests_own_stop_or_max_tokens_wins(request_settings, stop, max_tokens):
    params = chat_params(Settings(), **request_settings)
    assert (params.stop, params.max_tokens) == (stop, max_tokens)


def test_the_default_stop_is_a_setting_and_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("KADAPT_ANSWER_STOP", '["\\n", ". "]')
    assert chat_params(Settings()).stop == ("\n", ". ")
    monkeypatch.setenv("KADAPT_ANSWER_STOP", "[]")
    assert chat_params(Settings()).stop == ()


def test_max_tokens_over_the_limit_is_refused_naming_the_setting():
    with pytest.raises(InvalidInput, match="KADAPT_MAX_COMPLETION_TOKENS"):
        chat_params(Settings(max_completion_tokens=10), max_tokens=11)


def test_an_answer_that_opens_with_a_newline_is_not_cut_to_nothing_by_the_default_stop(kadapt_env):
    """The stop is looked for once the answer has begun: the engine's own check, applied as the engine applies it
    to the answer decoded so far after each token of the real tokenizer."""
    from kadapt.models import get_model_pool
    from kadapt.settings import get_settings
    from kadapt_transformers.engine import text_before_stop

    model = get_model_pool().get(get_settings().default_model)
    tokens = model.tokenizer("\n\nKron are more dangerous than brarf.\nAnd more.", add_special_tokens=False).input_ids
    for count in range(1, len(tokens) + 1):
        text, stopped = text_before_stop(model.tokenizer.decode(tokens[:count], skip_special_tokens=True), ("\n",))
        if stopped:
            break
    assert (stopped, text.strip()) == (True, "Kron are more dangerous than brarf.")
    assert text_before_stop("\n\nA.\nB", ("\n", "")) == ("\n\nA.", True)
    assert text_before_stop("A. B", ("\n",)) == ("A. B", False)
