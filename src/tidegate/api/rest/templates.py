"""REST twins of ``TemplatesService`` and ``FlexTemplatesService`` (v1b3).

``POST …/templates`` (CreateJobFromTemplate, the request as the body), ``POST
…/templates:launch?gcsPath=&validateOnly=`` (LaunchTemplate, ``LaunchTemplateParameters``
as the body), ``GET …/templates:get?gcsPath=`` (GetTemplate), each also without
``locations/{location}``; and ``POST …/locations/{location}/flexTemplates:launch``
(LaunchFlexTemplate, which has no location-less path). Templates are read and flex
programs run in a worker thread, off the event loop.
"""

from __future__ import annotations

from typing import Any

from google.cloud import dataflow_v1beta3 as dataflow
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from tidegate.api import wire
from tidegate.api.rest.http import Handler, JsonResponse, caller_of, read_body, wants_ints, where
from tidegate.api.template_calls import MESSAGES, TemplateCalls
from tidegate.auth import Permission
from tidegate.errors import InvalidArgument
from tidegate.service.jobs import JobService

__all__ = ["TemplateRoutes"]

_TRUE, _FALSE = ("true", "1"), ("false", "0", "")


def _bool_param(request: Request, name: str) -> bool:
    raw = request.query_params.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise InvalidArgument(f"invalid value {raw!r} for {name}: expected true or false", reason="INVALID_PARAMETER")


class TemplateRoutes:
    """The template handlers (CreateJobFromTemplate, LaunchTemplate, GetTemplate, LaunchFlexTemplate)."""

    def __init__(self, service: JobService) -> None:
        self.calls = TemplateCalls(service)

    def routes(self) -> dict[str, dict[str, tuple[Handler, Permission]]]:
        """Paths, their handlers and permissions, for both prefixes (flex templates: the located one only)."""
        paths: dict[str, dict[str, tuple[Handler, Permission]]] = {}
        launch, get = Permission.TEMPLATES_LAUNCH, Permission.TEMPLATES_GET
        for prefix in ("/v1b3/projects/{project_id}/locations/{location}", "/v1b3/projects/{project_id}"):
            paths[prefix + "/templates"] = {"POST": (self.create_job_from_template, launch)}
            paths[prefix + "/templates:launch"] = {"POST": (self.launch_template, launch)}
            paths[prefix + "/templates:get"] = {"GET": (self.get_template, get)}
        paths["/v1b3/projects/{project_id}/locations/{location}/flexTemplates:launch"] = {
            "POST": (self.launch_flex_template, launch)
        }
        return paths

    async def _request(self, request: Request, kind: str, *, body: bool) -> Any:
        """The request message: the body (when it is the whole request), then the path's project and location."""
        project_id, location = where(request)
        message = MESSAGES[kind]()
        if body:
            raw = await read_body(request)
            wire.parse_json(raw or b"{}", message, f"google.dataflow.v1beta3.{kind}")
        message.project_id = project_id
        if location or "location" in request.path_params:
            message.location = location or ""
        return message

    def _answer(self, request: Request, message: Any) -> Response:
        return JsonResponse(wire.to_json_dict(message, ints=wants_ints(request)))

    async def create_job_from_template(self, request: Request) -> Response:
        """CreateJobFromTemplate: the body is the request (``jobName``, ``gcsPath``, ``parameters``, …)."""
        message = await self._request(request, "CreateJobFromTemplateRequest", body=True)
        return self._answer(
            request, await run_in_threadpool(self.calls.create_job_from_template, message, caller_of(request))
        )

    async def launch_template(self, request: Request) -> Response:
        """LaunchTemplate: ``gcsPath`` and ``validateOnly`` in the query, ``LaunchTemplateParameters`` as the body."""
        message = await self._request(request, "LaunchTemplateRequest", body=False)
        query = request.query_params
        message.gcs_path = query.get("gcsPath", "")
        message.validate_only = _bool_param(request, "validateOnly")
        dynamic = query.get("dynamicTemplate.gcsPath", ""), query.get("dynamicTemplate.stagingLocation", "")
        if any(dynamic):
            message.dynamic_template.gcs_path, message.dynamic_template.staging_location = dynamic
        raw = await read_body(request)
        name = "google.dataflow.v1beta3.LaunchTemplateParameters"
        wire.parse_json(raw or b"{}", message.launch_parameters, name)
        return self._answer(request, await run_in_threadpool(self.calls.launch_template, message, caller_of(request)))

    async def get_template(self, request: Request) -> Response:
        """GetTemplate: ``gcsPath`` and ``view`` (METADATA_ONLY, the only one) in the query."""
        message = await self._request(request, "GetTemplateRequest", body=False)
        message.gcs_path = request.query_params.get("gcsPath", "")
        raw_view = request.query_params.get("view", "")
        if raw_view:
            message.view = wire.enum_value(dataflow.GetTemplateRequest.TemplateView, raw_view, "view")
        return self._answer(request, await run_in_threadpool(self.calls.get_template, message))

    async def launch_flex_template(self, request: Request) -> Response:
        """LaunchFlexTemplate: the body holds ``launchParameter`` and ``validateOnly``."""
        message = await self._request(request, "LaunchFlexTemplateRequest", body=True)
        return self._answer(
            request, await run_in_threadpool(self.calls.launch_flex_template, message, caller_of(request))
        )
