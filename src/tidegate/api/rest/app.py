"""Dataflow's REST API, v1b3, over the service layer: the application and its routes.

Paths, JSON and error bodies are the ones the official client (``transport="rest"``),
``google-api-python-client`` and Beam's DataflowRunner send and read. Every path that
names a location has a location-less legacy twin meaning the server's default
location. tidegate's own additions live under ``/tidegate/v1``.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tidegate.api.rest.http import Handler, JsonResponse, google_error, guard, internal_response
from tidegate.api.rest.jobs import RestApi
from tidegate.api.rest.templates import TemplateRoutes
from tidegate.service.jobs import JobService

__all__ = ["create_app"]


def _one_route(path: str, handlers: dict[str, Handler]) -> Route:
    """One route per path, so a method the path does not take is a 405 that lists every one it does."""
    guarded = {method: guard(handler) for method, handler in handlers.items()}
    if len(guarded) == 1:
        (method, only), *_ = guarded.items()
        return Route(path, only, methods=[method])

    async def dispatch(request: Request) -> Response:
        return await guarded["GET" if request.method == "HEAD" else request.method](request)

    return Route(path, dispatch, methods=list(guarded))


def _routes(api: RestApi) -> list[BaseRoute]:
    paths: dict[str, dict[str, Handler]] = {}

    def both(path: str, method: str, handler: Handler) -> None:
        for prefix in ("/v1b3/projects/{project_id}/locations/{location}", "/v1b3/projects/{project_id}"):
            paths.setdefault(prefix + path, {})[method] = handler

    both("/jobs/{job_id}", "GET", api.get_job)  # the most frequent call first
    both("/jobs/{job_id}", "PUT", api.update_job)
    paths["/v1b3/projects/{project_id}/jobs:aggregated"] = {"GET": api.aggregated_list_jobs}
    both("/jobs", "POST", api.create_job)
    both("/jobs", "GET", api.list_jobs)
    both("/jobs/{job_id}/messages", "GET", api.list_messages)
    both("/jobs/{job_id}:snapshot", "POST", api.snapshot_job)
    both("/jobs/{job_id}/snapshots", "GET", api.list_snapshots)
    both("/snapshots", "GET", api.list_snapshots)
    both("/snapshots/{snapshot_id}", "GET", api.get_snapshot)
    both("/snapshots/{snapshot_id}", "DELETE", api.delete_snapshot)
    paths["/v1b3/projects/{project_id}/snapshots"]["DELETE"] = api.delete_snapshot
    both("/jobs/{job_id}/metrics", "GET", api.job_metrics)
    # Execution details have no location-less path in Dataflow's API.
    located = "/v1b3/projects/{project_id}/locations/{location}/jobs/{job_id}"
    paths[located + "/executionDetails"] = {"GET": api.execution_details}
    paths[located + "/stages/{stage_id}/executionDetails"] = {"GET": api.stage_execution_details}
    for prefix in ("/tidegate/v1/projects/{project_id}/locations/{location}", "/tidegate/v1/projects/{project_id}"):
        paths[prefix + "/jobs/{job_id}/history"] = {"GET": api.history}
    paths["/tidegate/v1/staging"] = {"GET": api.staging}
    for path, handlers in TemplateRoutes(api.service).routes().items():
        paths.setdefault(path, {}).update(handlers)
    routes: list[BaseRoute] = [_one_route(path, handlers) for path, handlers in paths.items()]
    routes.append(Route("/healthz", api.healthz, methods=["GET"]))
    return routes


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


async def _internal(request: Request, exc: Exception) -> Response:
    return internal_response(request, exc)


def create_app(service: JobService) -> Starlette:
    """The REST application over ``service``."""
    api = RestApi(service)
    return Starlette(
        routes=_routes(api),
        exception_handlers={HTTPException: _http_error, Exception: _internal},
    )
