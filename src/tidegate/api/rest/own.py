"""tidegate's own REST routes (``/tidegate/v1``), beside Dataflow's: what the console reads that v1b3 lacks.

- ``GET /tidegate/v1/projects``: the projects that have jobs on this server;
- ``GET /tidegate/v1/projects/{p}[/locations/{l}]/jobs/{id}/graph``: the job's pipeline
  graph, each step with its element counts and state (see ``tidegate.service.graphs``).

A job's state history (``…/jobs/{id}/history``) is routed with the job handlers.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from tidegate.api import offload
from tidegate.api.rest.http import Handler, JsonResponse, where
from tidegate.auth import Gate, Permission
from tidegate.model import MetricValue
from tidegate.service.graphs import GraphView
from tidegate.service.jobs import JobService

__all__ = ["OwnRoutes", "graph_to_dict"]


def _counter(metric: MetricValue) -> dict[str, Any]:
    out: dict[str, Any] = {"name": metric.name, "value": metric.value}
    if metric.namespace:
        out["namespace"] = metric.namespace
    return out


def graph_to_dict(view: GraphView) -> dict[str, Any]:
    """The graph as JSON: ``{"jobId", "origin", "nodes": [...], "edges": [...]}`` (counts absent when unknown)."""
    nodes: list[dict[str, Any]] = []
    for step in view.steps:
        node: dict[str, Any] = {
            "id": step.node.id,
            "name": step.node.name,
            "kind": step.node.kind,
            "state": step.state,
            "steps": list(step.node.steps),
        }
        if step.elements_out is not None:
            node["elementsOut"] = step.elements_out
        if step.elements_in is not None:
            node["elementsIn"] = step.elements_in
        if step.counters:
            node["counters"] = [_counter(m) for m in step.counters]
        nodes.append(node)
    edges: list[dict[str, Any]] = []
    for edge in view.edges:
        item: dict[str, Any] = {"from": edge.edge.source, "to": edge.edge.target}
        if edge.edge.collection:
            item["collection"] = edge.edge.collection
        if edge.elements is not None:
            item["elements"] = edge.elements
        edges.append(item)
    return {
        "jobId": view.job.id,
        "currentState": view.job.current_state.name,
        "origin": view.origin,
        "nodes": nodes,
        "edges": edges,
    }


class OwnRoutes:
    """The handlers of tidegate's own routes."""

    def __init__(self, service: JobService, gate: Gate) -> None:
        self.service = service
        self.gate = gate

    def routes(self) -> dict[str, dict[str, tuple[Handler, Permission | None]]]:
        paths: dict[str, dict[str, tuple[Handler, Permission | None]]] = {
            "/tidegate/v1/projects": {"GET": (self.projects, None)}  # checks its caller itself: it names no project
        }
        for prefix in ("/tidegate/v1/projects/{project_id}/locations/{location}", "/tidegate/v1/projects/{project_id}"):
            paths[prefix + "/jobs/{job_id}/graph"] = {"GET": (self.graph, Permission.JOBS_GET)}
        return paths

    async def projects(self, request: Request) -> Response:
        """The projects that have jobs and that the caller may read, in name order."""
        caller = self.gate.caller(request.headers.get("authorization"))
        projects = await offload.read(self.service, self.service.projects)
        readable = [p for p in projects if caller.may(Permission.JOBS_LIST, p)]
        return JsonResponse({"projects": [{"projectId": p} for p in readable]})

    async def graph(self, request: Request) -> Response:
        """The job's graph with per-step progress; an engine may be asked (Flink's plan): off the event loop."""
        project_id, location = where(request)
        job_id = request.path_params["job_id"]
        view = await run_in_threadpool(lambda: self.service.graph(project_id, location, job_id))
        return JsonResponse(graph_to_dict(view))
