"""GetJob, the most frequent call by far (every client polls it), answered ahead of Starlette's stack.

A GET of ``/v1b3/projects/{project_id}[/locations/{location}]/jobs/{job_id}`` goes straight
to the same guarded handler the router would pick, with the same path parameters, and is
counted under the same route template: the answer, its errors and its metrics are the
router's. What it skips is the work around that handler: the middleware stack's three
layers of wrapped ``send`` and the scan of every route's pattern. Anything else (another
path or method, an app mounted under a root path) goes on to Starlette.
"""

from __future__ import annotations

import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from tidegate import telemetry
from tidegate.api.rest.http import Handler

__all__ = ["HotRoutes"]

_GET_JOB_LOCATED = "/v1b3/projects/{project_id}/locations/{location}/jobs/{job_id}"
_GET_JOB = "/v1b3/projects/{project_id}/jobs/{job_id}"


def _job_path(path: str) -> tuple[str, dict[str, str]] | None:
    """The GetJob route a path names and its parameters, as Starlette's ``[^/]+`` segments match it."""
    parts = path.split("/")
    if len(parts) == 8 and parts[4] == "locations" and parts[6] == "jobs":
        template, params = _GET_JOB_LOCATED, {"project_id": parts[3], "location": parts[5], "job_id": parts[7]}
    elif len(parts) == 6 and parts[4] == "jobs":
        template, params = _GET_JOB, {"project_id": parts[3], "job_id": parts[5]}
    else:
        return None
    if parts[0] or parts[1] != "v1b3" or parts[2] != "projects" or not all(params.values()):
        return None
    return template, params


class HotRoutes:
    """ASGI: GetJob to ``get_job`` (the guarded handler), everything else to ``app``."""

    def __init__(self, app: Starlette, get_job: Handler) -> None:
        self.app: ASGIApp = app
        self._get_job = get_job
        self.routes = app.routes
        """The router's routes (GetJob's among them)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            route = _job_path(scope["path"])
            if route is not None:
                start = time.perf_counter()
                scope["path_params"] = route[1]
                response = await self._get_job(Request(scope, receive))
                await response(scope, receive, send)
                telemetry.timed_http("GET", route[0], response.status_code, time.perf_counter() - start)
                return
        await self.app(scope, receive, send)
