"""Shared fixtures: every test gets its own data dir, catalog and Chroma, with the real embedding model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _clear_caches() -> None:
    from kadapt.plugins import get_plugins
    from kadapt.settings import get_settings

    get_settings.cache_clear()
    get_plugins.cache_clear()


@pytest.fixture
def kadapt_env(tmp_path, monkeypatch):
    """Point kadapt at a fresh data dir; allow connectors to read under ``tmp_path``."""
    data = tmp_path / "data"
    monkeypatch.setenv("KADAPT_DATA_DIR", str(data))
    monkeypatch.setenv("KADAPT_ALLOWED_ROOTS", str(tmp_path))
    for name in ("KADAPT_CATALOG_URL", "KADAPT_CHROMA_URL", "KADAPT_PLUGINS", "KADAPT_ALLOW_PRIVATE_NETWORKS"):
        if name in os.environ and not os.environ.get("KADAPT_TEST_KEEP_" + name.removeprefix("KADAPT_")):
            monkeypatch.delenv(name)
    _clear_caches()
    yield tmp_path
    _clear_caches()


@pytest.fixture
def catalog(kadapt_env):
    from kadapt.catalog import open_catalog

    return open_catalog()


@pytest.fixture
def store(kadapt_env):
    from kadapt.store import get_store

    return get_store()


def run_kadapt(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real ``kadapt`` command line in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "kadapt.cli", *args],
        capture_output=True,
        text=True,
        env=(env or dict(os.environ)) | {"COLUMNS": "200", "NO_COLOR": "1"},
        cwd=cwd,
        timeout=300,
    )
