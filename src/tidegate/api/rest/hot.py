"""The job calls that carry the load (GetJob, CreateJob, UpdateJob), answered ahead of Starlette's stack.

Every client polls GetJob; a submitter creates, a cancel or a drain updates. A request of
one of them (``GET`` or ``PUT`` of ``/v1b3/projects/{project_id}[/locations/{location}]/jobs/{job_id}``,
``POST`` of ``…/jobs``) goes straight to the same guarded handler the router would pick,
with the same path parameters, and is counted under the same route template: the answer,
its errors and its metrics are the router's. What it skips is the work around that
handler: the middleware stack's three layers of wrapped ``send`` and the scan of every
route's pattern. Anything else (another path or method, an app mounted under a root path)
goes on to Starlette.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from tidegate import telemetry
from tidegate.api.rest.http import Handler

__all__ = ["JOB", "JOBS", "HotRoutes"]

JOB = "/jobs/{job_id}"
"""A job's own path (GetJob, UpdateJob), under a project and optionally a location."""
JOBS = "/jobs"
"""The jobs' path (CreateJob)."""

_PROJECT = "/v1b3/projects/{project_id}"
_LOCATED = _PROJECT + "/locations/{location}"


def _route(path: str) -> tuple[str, str, dict[str, str]] | None:
    """Which of the two paths ``path`` is (``JOB`` or ``JOBS``), its route template and parameters.

    Segments are matched as Starlette's ``[^/]+`` matches them: none may be empty.
    """
    parts = path.split("/")
    if parts[0] or len(parts) < 5 or parts[1] != "v1b3" or parts[2] != "projects":
        return None
    params = {"project_id": parts[3]}
    prefix, rest = _PROJECT, parts[4:]
    if rest[0] == "locations" and len(rest) >= 3:
        params["location"], prefix, rest = rest[1], _LOCATED, rest[2:]
    if rest[0] != "jobs" or len(rest) > 2:
        return None
    kind = JOBS
    if len(rest) == 2:
        kind, params["job_id"] = JOB, rest[1]
    if not all(params.values()):
        return None
    return kind, prefix + kind, params


class HotRoutes:
    """ASGI: the hot job calls to their guarded handlers, everything else to ``app``.

    ``handlers`` maps (method, ``JOB`` or ``JOBS``) to the guarded handler the router has
    for that method on that path.
    """

    def __init__(self, app: Starlette, handlers: Mapping[tuple[str, str], Handler]) -> None:
        self.app: ASGIApp = app
        self._handlers = dict(handlers)
        self.routes = app.routes
        """The router's routes (the hot calls' among them)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            route = _route(scope["path"])
            if route is not None:
                kind, template, params = route
                handler = self._handlers.get((scope["method"], kind))
                if handler is not None:
                    start, status = time.perf_counter(), 500  # counted as the router's middleware counts it
                    scope["path_params"] = params
                    try:
                        response = await handler(Request(scope, receive))
                        status = response.status_code
                        await response(scope, receive, send)
                    finally:
                        telemetry.timed_http(scope["method"], template, status, time.perf_counter() - start)
                    return
        await self.app(scope, receive, send)
