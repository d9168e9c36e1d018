"""The web console: a single-page application served at ``/ui/``, with its assets in the package.

It is a client of the public REST API like any other: the browser calls ``/v1b3/…`` and
``/tidegate/v1/…`` on the same origin (``static/js/api.js``), with ``Authorization: Bearer``
when an API token is set in the console. These routes only serve files: ``/`` redirects
to ``/ui/``, ``/ui/assets/…`` are the static files, and every other ``/ui/…`` path is the
application's page (it routes in the browser, so a job's address can be bookmarked).
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

__all__ = ["STATIC", "console_routes"]

STATIC = Path(__file__).resolve().parent / "static"
"""The console's files: ``index.html``, ``console.css``, ``js/*.js`` (ES modules, no build step)."""

_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class _Assets(StaticFiles):
    """The static files, revalidated on every load (an upgraded server serves new ones at once)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


async def _to_console(request: Request) -> Response:
    return RedirectResponse("/ui/", status_code=307)


async def _page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=_PAGE_HEADERS)


def console_routes() -> list[BaseRoute]:
    """``/`` → ``/ui/``; ``/ui/assets/…``: the files; any other ``/ui/…``: the page."""
    return [
        Route("/", _to_console, methods=["GET", "HEAD"]),
        Route("/ui", _to_console, methods=["GET", "HEAD"]),
        Mount("/ui/assets", app=_Assets(directory=STATIC), name="console-assets"),
        Route("/ui/{path:path}", _page, methods=["GET", "HEAD"]),
    ]
