"""A job's pipeline graph with each step's progress (element counts, state), part of ``JobService``.

The graph comes from what the job brought or what its engine planned, in this order:
the runner-API pipeline a Beam job staged (``pipeline.pb``), the ``steps`` of the
submitted job (Dataflow's own step list), or the engine's plan of the run (Flink's job
graph). Each step's element counts come from the job's metrics and its state from the
stages that run it, so a console can draw it live while the job runs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from tidegate.engines.beam_graph import pipeline_graph
from tidegate.jobspec import PIPELINE_ARTIFACT, spec_of
from tidegate.lifecycle import JobState
from tidegate.model import GraphEdge, GraphNode, Job, JobGraph, MetricValue, StageDetails
from tidegate.store import Store

__all__ = ["EdgeProgress", "GraphCases", "GraphView", "StepProgress", "progress", "steps_graph"]

log = logging.getLogger(__name__)

_ELEMENT_COUNTS = ("ElementCount", "numRecordsOut")
"""What an engine calls the number of elements a step wrote (Beam's and Flink's)."""

# Execution states, Dataflow's names; Flink's vertex states mapped onto them.
_STATES = {
    "EXECUTION_STATE_NOT_STARTED": "NOT_STARTED",
    "EXECUTION_STATE_RUNNING": "RUNNING",
    "EXECUTION_STATE_SUCCEEDED": "SUCCEEDED",
    "EXECUTION_STATE_FAILED": "FAILED",
    "EXECUTION_STATE_CANCELLED": "CANCELLED",
    "CREATED": "NOT_STARTED",
    "SCHEDULED": "NOT_STARTED",
    "DEPLOYING": "RUNNING",
    "INITIALIZING": "RUNNING",
    "RUNNING": "RUNNING",
    "FINISHED": "SUCCEEDED",
    "CANCELING": "CANCELLED",
    "CANCELED": "CANCELLED",
    "FAILED": "FAILED",
}


@dataclass(frozen=True)
class StepProgress:
    """A node of the graph and how far it has got."""

    node: GraphNode
    state: str
    """NOT_STARTED, RUNNING, SUCCEEDED, FAILED, CANCELLED, or "" when no stage names it."""
    elements_out: int | None
    """Elements it wrote (None: the engine reports no count for it)."""
    elements_in: int | None
    counters: Sequence[MetricValue] = ()
    """The user metrics its steps reported."""


@dataclass(frozen=True)
class EdgeProgress:
    edge: GraphEdge
    elements: int | None


@dataclass(frozen=True)
class GraphView:
    """A job's graph with progress; ``origin`` "" when nothing describes the job's steps."""

    job: Job
    origin: str
    steps: Sequence[StepProgress]
    edges: Sequence[EdgeProgress]


def _key(name: str) -> str:
    """A step name as metric ids spell it (Flink replaces what is not a letter or digit)."""
    return re.sub(r"[^0-9A-Za-z]", "_", name)


def _refs(value: Any) -> Iterable[str]:
    """The step names an input property of a Dataflow step refers to (``{"step_name": ...}``, lists, maps)."""
    if isinstance(value, dict):
        if "step_name" in value:
            yield str(value["step_name"])
        else:
            for item in value.values():
                yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


def steps_graph(steps: Sequence[Any]) -> JobGraph:
    """The graph of a submitted job's ``steps`` (``google.dataflow.v1beta3.Step`` messages)."""
    nodes: list[GraphNode] = []
    edges: list[GraphEdge] = []
    names = {step.name for step in steps}
    for step in steps:
        properties = json_format.MessageToDict(step.properties) if step.HasField("properties") else {}
        user_name = str(properties.get("user_name") or step.name)
        outputs = tuple(
            str(o.get("user_name"))
            for o in properties.get("output_info") or ()
            if isinstance(o, dict) and o.get("user_name")
        )
        nodes.append(GraphNode(id=step.name, name=user_name, kind=step.kind, steps=(user_name,), outputs=outputs))
        inputs = [properties.get(k) for k in ("parallel_input", "inputs", "non_parallel_inputs")]
        for source in dict.fromkeys(_refs(inputs)):
            if source in names and source != step.name:
                edges.append(GraphEdge(source=source, target=step.name))
    return JobGraph(origin="steps", nodes=tuple(nodes), edges=tuple(edges))


def _state(node: GraphNode, stages: Sequence[StageDetails]) -> str:
    steps = set(node.steps)
    found = {_STATES.get(stage.state, "") for stage in stages if steps & set(stage.steps)} - {""}
    for state in ("FAILED", "RUNNING", "CANCELLED"):
        if state in found:
            return state
    if found == {"SUCCEEDED"}:
        return "SUCCEEDED"
    return "NOT_STARTED" if found else ""


def progress(job: Job, graph: JobGraph, metrics: Sequence[MetricValue], stages: Sequence[StageDetails]) -> GraphView:
    """The graph with each step's element counts and state, from the job's metrics and stages."""
    by_collection: dict[str, int] = {}
    by_step: dict[str, int] = {}
    user: dict[str, list[MetricValue]] = {}
    for metric in metrics:
        if metric.origin == "user":
            user.setdefault(metric.step, []).append(metric)
        elif metric.name in _ELEMENT_COUNTS:
            if metric.pcollection:
                by_collection[metric.pcollection] = by_collection.get(metric.pcollection, 0) + int(metric.value)
            key = _key(metric.step)
            by_step[key] = by_step.get(key, 0) + int(metric.value)

    def written(node: GraphNode) -> int | None:
        counts = [by_collection[c] for c in node.outputs if c in by_collection]
        if counts:
            return sum(counts)
        if not node.outputs and node.steps:  # a chain of operators: what its last one wrote
            return by_step.get(_key(node.steps[-1]))
        return None

    done = job.current_state is JobState.JOB_STATE_DONE  # every step of a job that succeeded did
    out = {node.id: written(node) for node in graph.nodes}
    edges = [EdgeProgress(edge, out.get(edge.source)) for edge in graph.edges]
    steps: list[StepProgress] = []
    for node in graph.nodes:
        feeding = [e.elements for e in edges if e.edge.target == node.id]
        known = [n for n in feeding if n is not None]
        counters = [m for step in node.steps for m in user.get(step, ())]
        state = "SUCCEEDED" if done else _state(node, stages)
        steps.append(StepProgress(node, state, out[node.id], sum(known) if known else None, counters))
    return GraphView(job, graph.origin, steps, edges)


class GraphCases:
    """The graph half of ``JobService`` (mixed in; it supplies the attributes below)."""

    store: Store
    observer: object

    def get_job(self, project_id: str, location: str | None, job_id: str) -> Job:
        raise NotImplementedError

    def metrics(self, project_id: str, location: str | None, job_id: str) -> tuple[Job, list[MetricValue]]:
        raise NotImplementedError

    def stages(self, project_id: str, location: str | None, job_id: str) -> tuple[Job, list[StageDetails]]:
        raise NotImplementedError

    def graph(self, project_id: str, location: str | None, job_id: str) -> GraphView:
        """The job's graph with progress (an empty one, origin "", when nothing describes its steps)."""
        job, metrics = self.metrics(project_id, location, job_id)
        _, stages = self.stages(project_id, location, job_id)
        return progress(job, self._graph_of(job), metrics, stages)

    def _graph_of(self, job: Job) -> JobGraph:
        pipeline = self.store.get_artifact(job.id, PIPELINE_ARTIFACT)
        if pipeline:
            try:
                return pipeline_graph(pipeline)
            except ValueError:  # a pipeline tidegate could not read is no reason to hide the job
                log.warning("job %s: its pipeline.pb is not a Beam pipeline", job.id)
        steps = spec_of(job).steps if job.spec else ()
        if steps:
            return steps_graph(steps)
        observer = self.observer
        plan = observer.plan(job) if observer is not None and hasattr(observer, "plan") else None
        return plan if isinstance(plan, JobGraph) else JobGraph(origin="")
