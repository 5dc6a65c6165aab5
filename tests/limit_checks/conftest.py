"""Fixtures of the limit tests: settings changed through the environment, as a deployment sets them."""

from __future__ import annotations

import pytest


@pytest.fixture
def limits(kadapt_env, monkeypatch):
    """``limits(max_document_bytes=10_000, ...)`` sets ``KADAPT_*`` variables and reloads the settings."""
    from kadapt.settings import get_settings

    def apply(**values) -> None:
        for name, value in values.items():
            monkeypatch.setenv(f"KADAPT_{name.upper()}", str(value))
        get_settings.cache_clear()

    return apply
