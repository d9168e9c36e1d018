"""Dataflow's REST API, v1b3, over the service layer.

Paths, JSON and error bodies are the ones the official client (``transport="rest"``),
``google-api-python-client`` and Beam's DataflowRunner send and read. Every path that
names a location has a location-less legacy twin meaning the server's default
location. tidegate's own additions live under ``/tidegate/v1``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from google.cloud import dataflow_v1beta3 as dataflow
from google.protobuf import timestamp_pb2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tidegate.api import wire
from tidegate.errors import InvalidArgument, NotFound, TidegateError
from tidegate.lifecycle import JobState
from tidegate.model import ListFilter, MessageImportance
from tidegate.service.jobs import JobService

__all__ = ["MAX_BODY_BYTES", "create_app", "error_body"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 20 * 1024 * 1024
"""Dataflow's own limit on a request."""

Handler = Callable[[Request], Awaitable[Response]]
_SnapshotJobRequestPb: Any = dataflow.SnapshotJobRequest.pb()


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_body(error: TidegateError) -> dict[str, Any]:
    """Google's JSON error body, with a ``google.rpc.ErrorInfo`` detail."""
    return _google_error(error.http_status, error.status, error.message, error.reason, error.metadata)


def _google_error(
    code: int, status: str, message: str, reason: str, metadata: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "status": status,
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": reason,
                    "domain": "dataflow.googleapis.com",
                    "metadata": metadata or {},
                }
            ],
        }
    }


def _error(error: TidegateError) -> Response:
    return JsonResponse(error_body(error), status_code=error.http_status)


def _ints(request: Request) -> bool:
    """Whether the client asked for enums as numbers (``$alt=json;enum-encoding=int``)."""
    raw: bytes = request.scope["query_string"]
    return b"enum-encoding%3Dint" in raw or b"enum-encoding=int" in raw  # no parse on the hot path


def _int_param(request: Request, name: str) -> int:
    raw = request.query_params.get(name, "")
    if not raw:
        return 0
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgument(
            f"invalid value {raw!r} for {name}: expected an integer", reason="INVALID_PARAMETER"
        ) from None


def _time_param(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name, "")
    if not raw:
        return None
    stamp = timestamp_pb2.Timestamp()
    try:
        stamp.FromJsonString(raw)
    except ValueError:
        raise InvalidArgument(
            f"invalid value {raw!r} for {name}: expected an RFC 3339 time", reason="INVALID_PARAMETER"
        ) from None
    when: datetime = stamp.ToDatetime(tzinfo=UTC)
    return when


def _view(request: Request) -> int:
    if b"view" not in request.scope["query_string"]:
        return wire.JobView.SUMMARY
    raw = request.query_params.get("view", "")
    return wire.enum_value(dataflow.JobView, raw, "view") if raw else wire.JobView.SUMMARY


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> InvalidArgument:
    return InvalidArgument(
        f"Request payload size exceeds the limit: {MAX_BODY_BYTES} bytes.", reason="REQUEST_TOO_LARGE"
    )


class RestApi:
    """The handlers; one instance per app, holding the service."""

    def __init__(self, service: JobService) -> None:
        self.service = service

    def _where(self, request: Request) -> tuple[str, str | None]:
        params = request.path_params
        if "location" in params:
            return params["project_id"], params["location"]
        location = request.query_params.get("location") if b"location" in request.scope["query_string"] else None
        return params["project_id"], location or None

    def _job(self, request: Request, job: Any, view: int) -> Response:
        return JsonResponse(wire.job_to_json_dict(job, view, ints=_ints(request)))

    async def create_job(self, request: Request) -> Response:
        project_id, location = self._where(request)
        view = _view(request)  # every parameter is checked before the job is made
        body = await _body(request)
        pb = wire.parse_json(body or b"{}", wire.JobPb(), "google.dataflow.v1beta3.Job")
        replace_id = request.query_params.get("replaceJobId", "")
        if replace_id and not pb.replace_job_id:
            pb.replace_job_id = replace_id
        new = wire.job_from_pb(pb, project_id, location or self.service.default_location)
        job = self.service.create_job(new)
        return self._job(request, job, view)

    async def get_job(self, request: Request) -> Response:
        project_id, location = self._where(request)
        view = _view(request)
        job = self.service.get_job(project_id, location, request.path_params["job_id"])
        return self._job(request, job, view)

    async def update_job(self, request: Request) -> Response:
        project_id, location = self._where(request)
        body = await _body(request)
        pb = wire.parse_json(body or b"{}", wire.JobPb(), "google.dataflow.v1beta3.Job")
        mask = [p for p in request.query_params.get("updateMask", "").split(",") if p]
        try:
            requested = JobState(pb.requested_state)
        except ValueError:
            raise InvalidArgument(f"unknown requestedState {pb.requested_state}", reason="INVALID_ENUM_VALUE") from None
        job = self.service.update_job(
            project_id,
            location,
            request.path_params["job_id"],
            requested_state=requested,
            labels=dict(pb.labels),
            update_mask=mask,
        )
        return self._job(request, job, wire.JobView.SUMMARY)

    async def list_jobs(self, request: Request) -> Response:
        return self._list(request, aggregated=False)

    async def aggregated_list_jobs(self, request: Request) -> Response:
        return self._list(request, aggregated=True)

    def _list(self, request: Request, *, aggregated: bool) -> Response:
        project_id, location = self._where(request)
        raw_filter = request.query_params.get("filter", "")
        list_filter = (
            ListFilter(wire.enum_value(dataflow.ListJobsRequest.Filter, raw_filter, "filter"))
            if raw_filter
            else ListFilter.UNKNOWN
        )
        view = _view(request)
        page = self.service.list_jobs(
            project_id,
            location,
            list_filter,
            _int_param(request, "pageSize"),
            request.query_params.get("pageToken", ""),
            request.query_params.get("name", ""),
            aggregated=aggregated,
        )
        ints = _ints(request)
        body: dict[str, Any] = {"jobs": [wire.job_to_json_dict(j, view, ints=ints) for j in page.items]}
        if page.next_page_token:
            body["nextPageToken"] = page.next_page_token
        return JsonResponse(body)

    async def list_messages(self, request: Request) -> Response:
        project_id, location = self._where(request)
        raw = request.query_params.get("minimumImportance", "")
        importance = (
            MessageImportance(wire.enum_value(dataflow.JobMessageImportance, raw, "minimumImportance"))
            if raw
            else MessageImportance.JOB_MESSAGE_IMPORTANCE_UNKNOWN
        )
        page = self.service.list_messages(
            project_id,
            location,
            request.path_params["job_id"],
            importance,
            _time_param(request, "startTime"),
            _time_param(request, "endTime"),
            _int_param(request, "pageSize"),
            request.query_params.get("pageToken", ""),
        )
        ints = _ints(request)
        body: dict[str, Any] = {
            "jobMessages": [wire.to_json_dict(wire.message_to_pb(m), ints=ints) for m in page.items]
        }
        if page.next_page_token:
            body["nextPageToken"] = page.next_page_token
        return JsonResponse(body)

    async def snapshot_job(self, request: Request) -> Response:
        """SnapshotJob (``POST …/jobs/{jobId}:snapshot``, body ``ttl``, ``snapshotSources``, ``description``)."""
        project_id, location = self._where(request)
        body = await _body(request)
        pb = wire.parse_json(body or b"{}", _SnapshotJobRequestPb(), "google.dataflow.v1beta3.SnapshotJobRequest")
        job_id = request.path_params["job_id"]
        ttl = pb.ttl.ToTimedelta() if pb.HasField("ttl") else None
        snapshot = await run_in_threadpool(  # a savepoint takes seconds: not on the event loop
            lambda: self.service.snapshot_job(
                project_id,
                location,
                job_id,
                ttl=ttl,
                description=pb.description,
                snapshot_sources=pb.snapshot_sources,
            )
        )
        return JsonResponse(wire.to_json_dict(wire.snapshot_to_pb(snapshot), ints=_ints(request)))

    async def get_snapshot(self, request: Request) -> Response:
        project_id, location = self._where(request)
        snapshot = self.service.get_snapshot(project_id, location, request.path_params["snapshot_id"])
        return JsonResponse(wire.to_json_dict(wire.snapshot_to_pb(snapshot), ints=_ints(request)))

    async def delete_snapshot(self, request: Request) -> Response:
        project_id, location = self._where(request)
        # The location-less DeleteSnapshot names the snapshot in the query (``?snapshotId=``).
        snapshot_id = request.path_params.get("snapshot_id") or request.query_params.get("snapshotId", "")
        if not snapshot_id:
            raise InvalidArgument("DeleteSnapshot needs a snapshotId", reason="MISSING_SNAPSHOT_ID")
        await run_in_threadpool(lambda: self.service.delete_snapshot(project_id, location, snapshot_id))
        return JsonResponse({})

    async def list_snapshots(self, request: Request) -> Response:
        """ListSnapshots: the location's snapshots, or one job's (``…/jobs/{jobId}/snapshots`` or ``?jobId=``)."""
        project_id, location = self._where(request)
        job_id = request.path_params.get("job_id") or request.query_params.get("jobId", "")
        snapshots = self.service.list_snapshots(project_id, location, job_id)
        ints = _ints(request)
        return JsonResponse({"snapshots": [wire.to_json_dict(wire.snapshot_to_pb(s), ints=ints) for s in snapshots]})

    async def job_metrics(self, request: Request) -> Response:
        """GetJobMetrics: live while the job runs, final once it has ended."""
        project_id, location = self._where(request)
        _time_param(request, "startTime")  # accepted and checked; every metric is cumulative
        _, metrics = self.service.metrics(project_id, location, request.path_params["job_id"])
        pb = wire.metrics_to_pb(metrics, self.service.clock())
        return JsonResponse(wire.to_json_dict(pb, ints=_ints(request)))

    async def execution_details(self, request: Request) -> Response:
        """GetJobExecutionDetails: a summary per stage."""
        project_id, location = self._where(request)
        _, stages = self.service.stages(project_id, location, request.path_params["job_id"])
        return JsonResponse(wire.to_json_dict(wire.stages_to_pb(stages), ints=_ints(request)))

    async def stage_execution_details(self, request: Request) -> Response:
        """GetStageExecutionDetails: tidegate's workers are local processes, so a stage lists none."""
        project_id, location = self._where(request)
        job, stages = self.service.stages(project_id, location, request.path_params["job_id"])
        stage_id = request.path_params["stage_id"]
        if stage_id not in {s.stage_id for s in stages}:
            raise NotFound(f"Job {job.id} has no stage {stage_id}", reason="STAGE_NOT_FOUND")
        return JsonResponse({})

    async def history(self, request: Request) -> Response:
        project_id, location = self._where(request)
        changes = self.service.history(project_id, location, request.path_params["job_id"])
        return JsonResponse({"stateHistory": [wire.state_change_to_dict(c) for c in changes]})

    async def healthz(self, request: Request) -> Response:
        return JsonResponse({"status": "ok"})


def _guard(handler: Handler) -> Handler:
    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except TidegateError as error:
            return _error(error)
        except Exception as exc:
            # Answered here: an exception that reaches Starlette's error middleware is raised
            # again after the 500 is sent, and uvicorn then drops the client's connection.
            return _internal_response(request, exc)

    guarded.__name__ = handler.__name__
    return guarded


def _one_route(path: str, handlers: dict[str, Handler]) -> Route:
    """One route per path, so a method the path does not take is a 405 that lists every one it does."""
    guarded = {method: _guard(handler) for method, handler in handlers.items()}
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
    from tidegate.api.rest.templates import TemplateRoutes  # it builds on this module's helpers

    for path, handlers in TemplateRoutes(api).routes().items():
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
    body = _google_error(code, _HTTP_STATUS.get(code, "UNKNOWN"), message, reason)
    return JsonResponse(body, status_code=code, headers=exc.headers)


def _internal_response(request: Request, exc: Exception) -> Response:
    log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    body = _google_error(500, "INTERNAL", f"internal error: {type(exc).__name__}", "INTERNAL")
    return JsonResponse(body, status_code=500)


async def _internal(request: Request, exc: Exception) -> Response:
    return _internal_response(request, exc)


def create_app(service: JobService) -> Starlette:
    """The REST application over ``service``."""
    api = RestApi(service)
    return Starlette(
        routes=_routes(api),
        exception_handlers={HTTPException: _http_error, Exception: _internal},
    )
