"""A run's observations (metrics, stages, the engine's plan): from its engine while it runs, kept after.

When a run ends, its final metrics, stages and plan are kept with the job (an artifact), so
that they can be read once the engine has released the run and answers no more.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from tidegate.engines.base import Engine, Handle, Planning
from tidegate.model import GraphEdge, GraphNode, Job, JobGraph, MetricValue, StageDetails
from tidegate.store import Store
from tidegate.telemetry import call_engine

__all__ = ["Observations"]

log = logging.getLogger(__name__)

_FINAL = "final-observations.json"


def _stage_to_json(stage: StageDetails) -> dict[str, object]:
    return {
        "stage_id": stage.stage_id,
        "state": stage.state,
        "start_time": stage.start_time.isoformat() if stage.start_time else None,
        "end_time": stage.end_time.isoformat() if stage.end_time else None,
        "steps": list(stage.steps),
    }


def _stage_from_json(data: dict[str, Any]) -> StageDetails:
    start, end = data.get("start_time"), data.get("end_time")
    return StageDetails(
        stage_id=data["stage_id"],
        state=data["state"],
        start_time=datetime.fromisoformat(start) if start else None,
        end_time=datetime.fromisoformat(end) if end else None,
        steps=tuple(data.get("steps", ())),
    )


def _graph_from_json(data: dict[str, Any]) -> JobGraph:
    return JobGraph(
        origin=data["origin"],
        nodes=tuple(
            GraphNode(**{**n, "steps": tuple(n["steps"]), "outputs": tuple(n["outputs"])}) for n in data["nodes"]
        ),
        edges=tuple(GraphEdge(**e) for e in data["edges"]),
    )


class Observations:
    """The observations of the runs of one scheduler; ``handle_of(job)``: the engine and handle of its run, if any."""

    def __init__(self, store: Store, handle_of: Callable[[Job], tuple[Engine, Handle] | None]) -> None:
        self.store = store
        self._handle = handle_of

    def metrics(self, job: Job) -> list[MetricValue]:
        """The job's metrics: live from its engine while it runs, the kept final ones after."""
        final = self.store.get_artifact(job.id, _FINAL)
        if final is not None:
            return [MetricValue(**m) for m in json.loads(final)["metrics"]]
        found = self._handle(job)
        return found[0].metrics(found[1]) if found else []

    def stages(self, job: Job) -> list[StageDetails]:
        """The job's execution details per stage."""
        final = self.store.get_artifact(job.id, _FINAL)
        if final is not None:
            return [_stage_from_json(s) for s in json.loads(final)["stages"]]
        found = self._handle(job)
        return found[0].stages(found[1]) if found else []

    def plan(self, job: Job) -> JobGraph | None:
        """The engine's plan of the job's run (Flink's job graph), if its engine has one."""
        final = self.store.get_artifact(job.id, _FINAL)
        if final is not None:
            kept = json.loads(final).get("plan")
            return _graph_from_json(kept) if kept else None
        found = self._handle(job)
        if found is None or not isinstance(found[0], Planning):
            return None
        return found[0].plan(found[1])

    def keep(self, job: Job) -> None:
        """Keep a run's final metrics and stages with the job, before its files may go."""
        found = self._handle(job)
        if found is None:
            return
        engine, handle = found
        try:
            data: dict[str, Any] = {
                "metrics": [
                    dataclasses.asdict(m) for m in call_engine(handle.engine, "metrics", engine.metrics, handle)
                ],
                "stages": [_stage_to_json(s) for s in call_engine(handle.engine, "stages", engine.stages, handle)],
            }
            plan = engine.plan(handle) if isinstance(engine, Planning) else None
            if plan is not None:
                data["plan"] = dataclasses.asdict(plan)
        except Exception:  # observations are a courtesy: never block a job's end on them
            log.exception("could not read the final metrics of job %s", job.id)
            return
        self.store.put_artifact(job.id, _FINAL, json.dumps(data).encode())
