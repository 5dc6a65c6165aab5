"""Lazily opened resources for CLI commands (nothing heavy is imported for ``--help``)."""

from __future__ import annotations

__all__ = ["catalog", "settings", "store"]


def settings():
    from kadapt.settings import get_settings

    return get_settings()


def catalog():
    from kadapt.catalog import open_catalog
    from kadapt.jobs import recover_interrupted

    opened = open_catalog(settings())
    recover_interrupted(opened, stale_after=settings().job_stale_seconds)
    return opened


def store():
    from kadapt.store import get_store

    return get_store(settings())
