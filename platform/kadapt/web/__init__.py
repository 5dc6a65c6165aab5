"""The web console under ``/ui``: sign-in, the admin dashboard, KB and job pages, API keys, the employee chat
page and the report. Pages are server-rendered Jinja2 templates with one small script; nothing is fetched
from another host. ``install(app)`` adds it to an app built by ``kadapt.api.create_app``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.staticfiles import StaticFiles

from kadapt.errors import NotFound
from kadapt.web import chat, documents, jobs, kbs, keys, lifecycle, oidc, signin
from kadapt.web.render import PREFIX, PageRoute, SecurityHeaders
from kadapt.web.session import UserDep

__all__ = ["install", "router"]

STATIC = Path(__file__).resolve().parent.parent / "static"

_fallback = APIRouter(route_class=PageRoute)


@_fallback.get("/{path:path}")
def not_found(request: Request, path: str, user: UserDep) -> None:
    """Any other address under /ui: a 404 page rather than the API's JSON error."""
    raise NotFound(f"there is no console page at {request.url.path}")


router = APIRouter(prefix=PREFIX, include_in_schema=False)
for _module in (signin, oidc, kbs, lifecycle, documents, jobs, keys, chat):
    router.include_router(_module.router)
router.include_router(_fallback)  # last, so it only answers what no page matched


def install(app: FastAPI) -> None:
    """Serve the console: its pages, its static files and the security headers of every ``/ui`` response.

    The static files are mounted first: the router's last route answers every other ``/ui`` address with 404.
    """
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC), name="ui-static")
    app.include_router(router)
    app.add_middleware(SecurityHeaders)
