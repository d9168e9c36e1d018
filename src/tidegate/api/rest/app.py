"""Dataflow's REST API, v1b3, over the service layer: the application and its routes.

Paths, JSON and error bodies are the ones the official client (``transport="rest"``),
``google-api-python-client`` and Beam's DataflowRunner send and read. Every path that
names a location has a location-less legacy twin meaning the server's default
location. tidegate's own additions live under ``/tidegate/v1``; the web console under
``/ui/`` (``/`` redirects there); the token endpoint (where service accounts trade a signed
JWT for an access token) is ``POST /token``. Every route declares the permission it needs
in its path's project, which the gate checks before the handler runs.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from tidegate import telemetry
from tidegate.api.console import console_routes
from tidegate.api.instrumentation import RestMetrics
from tidegate.api.rest.credentials import CredentialRoutes
from tidegate.api.rest.hot import JOB, JOBS, HotRoutes
from tidegate.api.rest.http import Handler, JsonResponse, google_error, guard, internal_response
from tidegate.api.rest.jobs import RestApi
from tidegate.api.rest.own import OwnRoutes
from tidegate.api.rest.templates import TemplateRoutes
from tidegate.auth import Gate, Permission
from tidegate.auth.tokens import TOKEN_PATH
from tidegate.service.jobs import JobService

__all__ = ["create_app"]


Routed = tuple[Handler, Permission | None]
"""A handler and the permission it needs in the path's project (None: it checks its own caller, if any)."""


def _one_route(path: str, handlers: dict[str, Routed], gate: Gate) -> Route:
    """One route per path, so a method the path does not take is a 405 that lists every one it does."""
    guarded = {method: guard(handler, gate, permission) for method, (handler, permission) in handlers.items()}
    if len(guarded) == 1:
        (method, only), *_ = guarded.items()
        return Route(path, only, methods=[method])

    async def dispatch(request: Request) -> Response:
        return await guarded["GET" if request.method == "HEAD" else request.method](request)

    return Route(path, dispatch, methods=list(guarded))


_HOT = {("GET", JOB), ("PUT", JOB), ("POST", JOBS)}
"""The calls ``HotRoutes`` answers ahead of the router (the handlers of their location-less paths serve both)."""


def _routes(api: RestApi, gate: Gate) -> tuple[list[BaseRoute], dict[tuple[str, str], Handler]]:
    """The router's routes, and the guarded handlers of the hot calls (``_HOT``), taken from the same table."""
    paths: dict[str, dict[str, Routed]] = {}
    p = Permission

    def both(path: str, method: str, handler: Handler, permission: Permission) -> None:
        for prefix in ("/v1b3/projects/{project_id}/locations/{location}", "/v1b3/projects/{project_id}"):
            paths.setdefault(prefix + path, {})[method] = (handler, permission)

    both("/jobs/{job_id}", "GET", api.get_job, p.JOBS_GET)  # the most frequent call first (``HotRoutes`` has it too)
    both("/jobs/{job_id}", "PUT", api.update_job, p.JOBS_UPDATE)
    paths["/v1b3/projects/{project_id}/jobs:aggregated"] = {"GET": (api.aggregated_list_jobs, p.JOBS_LIST)}
    both("/jobs", "POST", api.create_job, p.JOBS_CREATE)
    both("/jobs", "GET", api.list_jobs, p.JOBS_LIST)
    both("/jobs/{job_id}/messages", "GET", api.list_messages, p.MESSAGES_LIST)
    both("/jobs/{job_id}:snapshot", "POST", api.snapshot_job, p.JOBS_SNAPSHOT)
    both("/jobs/{job_id}/snapshots", "GET", api.list_snapshots, p.SNAPSHOTS_LIST)
    both("/snapshots", "GET", api.list_snapshots, p.SNAPSHOTS_LIST)
    both("/snapshots/{snapshot_id}", "GET", api.get_snapshot, p.SNAPSHOTS_GET)
    both("/snapshots/{snapshot_id}", "DELETE", api.delete_snapshot, p.SNAPSHOTS_DELETE)
    paths["/v1b3/projects/{project_id}/snapshots"]["DELETE"] = (api.delete_snapshot, p.SNAPSHOTS_DELETE)
    both("/jobs/{job_id}/metrics", "GET", api.job_metrics, p.METRICS_GET)
    # Execution details have no location-less path in Dataflow's API.
    located = "/v1b3/projects/{project_id}/locations/{location}/jobs/{job_id}"
    paths[located + "/executionDetails"] = {"GET": (api.execution_details, p.METRICS_GET)}
    paths[located + "/stages/{stage_id}/executionDetails"] = {"GET": (api.stage_execution_details, p.METRICS_GET)}
    for prefix in ("/tidegate/v1/projects/{project_id}/locations/{location}", "/tidegate/v1/projects/{project_id}"):
        paths[prefix + "/jobs/{job_id}/history"] = {"GET": (api.history, p.JOBS_GET)}
        paths[prefix + "/jobs/{job_id}/logs"] = {"GET": (api.logs, p.JOBS_GET)}
    paths["/tidegate/v1/staging"] = {"GET": (api.staging, None)}  # where clients may stage: no project's secret
    credentials = CredentialRoutes(gate)
    tables: list[Mapping[str, Mapping[str, Routed]]] = [
        TemplateRoutes(api.service).routes(),
        credentials.routes(),
        OwnRoutes(api.service, gate).routes(),
    ]
    for table in tables:
        for path, handlers in table.items():
            paths.setdefault(path, {}).update(handlers)
    routes: list[BaseRoute] = [_one_route(path, handlers, gate) for path, handlers in paths.items()]
    routes.append(Route(TOKEN_PATH, credentials.token, methods=["POST"]))
    routes.append(Route("/healthz", api.healthz, methods=["GET"]))
    routes.append(Route("/metrics", _metrics, methods=["GET"]))
    hot = {}
    for method, kind in _HOT:
        handler, permission = paths["/v1b3/projects/{project_id}" + kind][method]
        hot[method, kind] = guard(handler, gate, permission)
    return [*routes, *console_routes()], hot


_HTTP_STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 405: "UNIMPLEMENTED"}


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such path, a method the path does not take) as Google's error body."""
    assert isinstance(exc, HTTPException)
    code = exc.status_code
    if code == 404:
        message, reason = f"The requested URL {request.url.path} was not found on this server.", "URL_NOT_FOUND"
    elif code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"Method {request.method} is not allowed on {request.url.path}" + (
            f" (allowed: {allowed})" if allowed else ""
        )
        reason = "METHOD_NOT_ALLOWED"
    else:
        message, reason = str(exc.detail), "HTTP_ERROR"
    body = google_error(code, _HTTP_STATUS.get(code, "UNKNOWN"), message, reason)
    return JsonResponse(body, status_code=code, headers=exc.headers)


async def _metrics(request: Request) -> Response:
    """Prometheus' scrape: every metric of this server (the store's counts are read now, off the event loop)."""
    return Response(await run_in_threadpool(telemetry.exposition), media_type=telemetry.CONTENT_TYPE)


async def _internal(request: Request, exc: Exception) -> Response:
    return internal_response(request, exc)


def create_app(service: JobService, gate: Gate | None = None) -> ASGIApp:
    """The REST application over ``service``; every call passes ``gate`` (by default, one over the service's store)."""
    api = RestApi(service)
    gate = gate or Gate(service.store)
    routes, hot = _routes(api, gate)
    app = Starlette(
        routes=routes,
        middleware=[Middleware(RestMetrics)],
        exception_handlers={HTTPException: _http_error, Exception: _internal},
    )
    return HotRoutes(app, hot)
