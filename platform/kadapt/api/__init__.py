"""The kadapt web application: OpenAI-compatible chat, the admin API and the web console (``/ui``).

Build it with ``create_app()``.
"""

from __future__ import annotations

import contextlib
import functools

from fastapi import FastAPI

from kadapt import __version__

__all__ = ["create_app"]


def create_app(settings=None, plugins=None) -> FastAPI:
    from kadapt.api.errors import install_error_handlers
    from kadapt.api.routes import adapt, audit, chat, decisions, health, jobs, kbs, sources
    from kadapt.api.schemas import ERROR_RESPONSES
    from kadapt.api.security import install_security
    from kadapt.audit import AuditMiddleware
    from kadapt.catalog import open_catalog
    from kadapt.chat_queue import ChatQueue
    from kadapt.jobs import recover_interrupted
    from kadapt.models import ModelPool
    from kadapt.plugins import get_plugins
    from kadapt.settings import get_settings
    from kadapt.store import get_store
    from kadapt.throttle import AuthThrottle
    from kadapt.web import install as install_web_console

    settings = settings or get_settings()
    plugins = plugins or get_plugins()
    app = FastAPI(
        title="kadapt",
        version=__version__,
        description="Chat with your company's knowledge bases (OpenAI-compatible), and administer them.",
        responses=ERROR_RESPONSES,
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.catalog = open_catalog(settings)
    recover_interrupted(app.state.catalog, stale_after=settings.job_stale_seconds)
    app.state.store = functools.cache(lambda: get_store(settings))  # opened on first use
    app.state.pool = ModelPool(settings, plugins)
    app.state.auth_throttle = AuthThrottle.from_settings(settings)
    app.state.chat_queue = ChatQueue.from_settings(settings)
    install_error_handlers(app)
    for module in (health, chat, kbs, sources, adapt, decisions, jobs, audit):
        app.include_router(module.router)
    install_web_console(app)
    app.add_middleware(AuditMiddleware)
    install_security(app, settings)  # outermost: its headers and limits cover every answer
    plugins.pm.hook.register_routes(app=app)
    app.state.plugins = plugins
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI):
    """While the server runs: the sources' sync schedules (KADAPT_SCHEDULER), in a background thread."""
    from kadapt.scheduler import Scheduler

    scheduler = None
    if app.state.settings.scheduler:
        scheduler = Scheduler(app.state.catalog, app.state.settings, app.state.plugins)
        scheduler.start()
    try:
        yield
    finally:
        if scheduler is not None:
            scheduler.stop()
