"""The job, message, metric and snapshot handlers of Dataflow's REST API, v1b3 (routed by ``app``)."""

from __future__ import annotations

from typing import Any

from google.cloud import dataflow_v1beta3 as dataflow
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from tidegate.api import offload, wire
from tidegate.api.rest.http import (
    JsonResponse,
    caller_of,
    int_param,
    json_bytes,
    read_body,
    time_param,
    view_param,
    wants_ints,
    where,
)
from tidegate.errors import InvalidArgument, NotFound
from tidegate.lifecycle import JobState
from tidegate.model import Job, ListFilter, MessageImportance
from tidegate.service.jobs import JobService

__all__ = ["RestApi"]

_SnapshotJobRequestPb: Any = dataflow.SnapshotJobRequest.pb()


class RestApi:
    """The handlers; one instance per app, holding the service."""

    def __init__(self, service: JobService) -> None:
        self.service = service
        self._rendered = wire.Encodings()
        """Jobs as JSON, by view and enum encoding."""

    def _job(self, request: Request, job: Job, view: int) -> Response:
        ints = wants_ints(request)
        body = self._rendered.get(job, (view, ints), lambda: json_bytes(wire.job_to_json_dict(job, view, ints=ints)))
        return Response(body, media_type="application/json")

    async def create_job(self, request: Request) -> Response:
        """CreateJob: 200 with the new job, or with the job that is there (a repeat's, a taken name's)."""
        project_id, location = where(request)
        view = view_param(request)  # every parameter is checked before the job is made
        body = await read_body(request)
        pb = wire.parse_json(body or b"{}", wire.JobPb(), "google.dataflow.v1beta3.Job")
        replace_id = request.query_params.get("replaceJobId", "")
        if replace_id and not pb.replace_job_id:
            pb.replace_job_id = replace_id
        new = wire.job_from_pb(pb, project_id, location or self.service.default_location, caller_of(request).name)
        job = await offload.submit(self.service, new)
        return self._job(request, job, view)

    async def get_job(self, request: Request) -> Response:
        project_id, location = where(request)
        view = view_param(request)
        job_id = request.path_params["job_id"]
        job = await offload.read(self.service, lambda: self.service.get_job(project_id, location, job_id))
        return self._job(request, job, view)

    async def update_job(self, request: Request) -> Response:
        project_id, location = where(request)
        body = await read_body(request)
        pb = wire.parse_json(body or b"{}", wire.JobPb(), "google.dataflow.v1beta3.Job")
        mask = [p for p in request.query_params.get("updateMask", "").split(",") if p]
        try:
            requested = JobState(pb.requested_state)
        except ValueError:
            raise InvalidArgument(f"unknown requestedState {pb.requested_state}", reason="INVALID_ENUM_VALUE") from None
        job_id, labels, caller = request.path_params["job_id"], dict(pb.labels), caller_of(request).name
        named, runtime_params = wire.update_names(pb), wire.runtime_body(pb)

        def call() -> Job:
            return self.service.update_job(
                project_id,
                location,
                job_id,
                requested_state=requested,
                labels=labels,
                update_mask=mask,
                caller=caller,
                named=named,
                runtime_params=runtime_params,
            )

        if JobService.updates_runtime_params(mask):  # a rescale asks the engine: on a thread, not in a batch
            job = await run_in_threadpool(call)
        else:
            job = await offload.write(self.service, call)
        return self._job(request, job, wire.JobView.SUMMARY)

    async def list_jobs(self, request: Request) -> Response:
        return await self._list(request, aggregated=False)

    async def aggregated_list_jobs(self, request: Request) -> Response:
        return await self._list(request, aggregated=True)

    async def _list(self, request: Request, *, aggregated: bool) -> Response:
        project_id, location = where(request)
        raw_filter = request.query_params.get("filter", "")
        list_filter = (
            ListFilter(wire.enum_value(dataflow.ListJobsRequest.Filter, raw_filter, "filter"))
            if raw_filter
            else ListFilter.UNKNOWN
        )
        view = view_param(request)
        size, token, name = int_param(request, "pageSize"), request.query_params.get("pageToken", ""), ""
        if b"name" in request.scope["query_string"]:
            name = request.query_params.get("name", "")
        prefix = request.query_params.get("namePrefix", "")  # tidegate's own: the console's search
        page = await offload.read(
            self.service,
            lambda: self.service.list_jobs(
                project_id, location, list_filter, size, token, name, aggregated=aggregated, name_prefix=prefix
            ),
        )
        ints = wants_ints(request)
        body: dict[str, Any] = {"jobs": [wire.job_to_json_dict(j, view, ints=ints) for j in page.items]}
        if page.next_page_token:
            body["nextPageToken"] = page.next_page_token
        return JsonResponse(body)

    async def list_messages(self, request: Request) -> Response:
        project_id, location = where(request)
        raw = request.query_params.get("minimumImportance", "")
        importance = (
            MessageImportance(wire.enum_value(dataflow.JobMessageImportance, raw, "minimumImportance"))
            if raw
            else MessageImportance.JOB_MESSAGE_IMPORTANCE_UNKNOWN
        )
        job_id, start, end = (
            request.path_params["job_id"],
            time_param(request, "startTime"),
            time_param(request, "endTime"),
        )
        size, token = int_param(request, "pageSize"), request.query_params.get("pageToken", "")
        page, events = await offload.read(
            self.service,
            lambda: (
                self.service.list_messages(project_id, location, job_id, importance, start, end, size, token),
                # the job's autoscaling events come with its first page of messages
                [] if token else self.service.autoscaling_events(project_id, location, job_id, start, end),
            ),
        )
        ints = wants_ints(request)
        body: dict[str, Any] = {
            "jobMessages": [wire.to_json_dict(wire.message_to_pb(m), ints=ints) for m in page.items]
        }
        if events:
            body["autoscalingEvents"] = [wire.to_json_dict(wire.autoscaling_event_to_pb(e), ints=ints) for e in events]
        if page.next_page_token:
            body["nextPageToken"] = page.next_page_token
        return JsonResponse(body)

    async def snapshot_job(self, request: Request) -> Response:
        """SnapshotJob (``POST …/jobs/{jobId}:snapshot``, body ``ttl``, ``snapshotSources``, ``description``)."""
        project_id, location = where(request)
        body = await read_body(request)
        pb = wire.parse_json(body or b"{}", _SnapshotJobRequestPb(), "google.dataflow.v1beta3.SnapshotJobRequest")
        job_id = request.path_params["job_id"]
        ttl = pb.ttl.ToTimedelta() if pb.HasField("ttl") else None
        caller = caller_of(request).name
        snapshot = await run_in_threadpool(  # a savepoint takes seconds: not on the event loop
            lambda: self.service.snapshot_job(
                project_id,
                location,
                job_id,
                ttl=ttl,
                description=pb.description,
                snapshot_sources=pb.snapshot_sources,
                caller=caller,
            )
        )
        return JsonResponse(wire.to_json_dict(wire.snapshot_to_pb(snapshot), ints=wants_ints(request)))

    async def get_snapshot(self, request: Request) -> Response:
        project_id, location = where(request)
        snapshot_id = request.path_params["snapshot_id"]
        snapshot = await offload.read(
            self.service, lambda: self.service.get_snapshot(project_id, location, snapshot_id)
        )
        return JsonResponse(wire.to_json_dict(wire.snapshot_to_pb(snapshot), ints=wants_ints(request)))

    async def delete_snapshot(self, request: Request) -> Response:
        project_id, location = where(request)
        # The location-less DeleteSnapshot names the snapshot in the query (``?snapshotId=``).
        snapshot_id = request.path_params.get("snapshot_id") or request.query_params.get("snapshotId", "")
        if not snapshot_id:
            raise InvalidArgument("DeleteSnapshot needs a snapshotId", reason="MISSING_SNAPSHOT_ID")
        caller = caller_of(request).name
        await run_in_threadpool(lambda: self.service.delete_snapshot(project_id, location, snapshot_id, caller=caller))
        return JsonResponse({})

    async def list_snapshots(self, request: Request) -> Response:
        """ListSnapshots: the location's snapshots, or one job's (``…/jobs/{jobId}/snapshots`` or ``?jobId=``)."""
        project_id, location = where(request)
        job_id = request.path_params.get("job_id") or request.query_params.get("jobId", "")
        snapshots = await offload.read(self.service, lambda: self.service.list_snapshots(project_id, location, job_id))
        ints = wants_ints(request)
        return JsonResponse({"snapshots": [wire.to_json_dict(wire.snapshot_to_pb(s), ints=ints) for s in snapshots]})

    async def job_metrics(self, request: Request) -> Response:
        """GetJobMetrics: live while the job runs, final once it has ended."""
        project_id, location = where(request)
        time_param(request, "startTime")  # accepted and checked; every metric is cumulative
        job_id = request.path_params["job_id"]
        _, metrics = await run_in_threadpool(self.service.metrics, project_id, location, job_id)  # may ask an engine
        pb = wire.metrics_to_pb(metrics, self.service.clock())
        return JsonResponse(wire.to_json_dict(pb, ints=wants_ints(request)))

    async def execution_details(self, request: Request) -> Response:
        """GetJobExecutionDetails: a summary per stage."""
        project_id, location = where(request)
        _, stages = await run_in_threadpool(self.service.stages, project_id, location, request.path_params["job_id"])
        return JsonResponse(wire.to_json_dict(wire.stages_to_pb(stages), ints=wants_ints(request)))

    async def stage_execution_details(self, request: Request) -> Response:
        """GetStageExecutionDetails: tidegate's workers are local processes, so a stage lists none."""
        project_id, location = where(request)
        job, stages = await run_in_threadpool(self.service.stages, project_id, location, request.path_params["job_id"])
        stage_id = request.path_params["stage_id"]
        if stage_id not in {s.stage_id for s in stages}:
            raise NotFound(f"Job {job.id} has no stage {stage_id}", reason="STAGE_NOT_FOUND")
        return JsonResponse({})

    async def history(self, request: Request) -> Response:
        project_id, location = where(request)
        job_id = request.path_params["job_id"]
        changes = await offload.read(self.service, lambda: self.service.history(project_id, location, job_id))
        return JsonResponse({"stateHistory": [wire.state_change_to_dict(c) for c in changes]})

    async def logs(self, request: Request) -> Response:
        """What the job's processes printed (tidegate's own): a page of lines after ``offset``."""
        project_id, location = where(request)
        job_id, offset, size = (
            request.path_params["job_id"],
            request.query_params.get("offset", ""),
            int_param(request, "pageSize"),
        )
        entries, offset, complete = await offload.read(
            self.service, lambda: self.service.logs(project_id, location, job_id, offset, size)
        )
        lines = [{"source": e.source, "text": e.text} for e in entries]
        return JsonResponse({"entries": lines, "nextOffset": offset, "complete": complete})

    async def staging(self, request: Request) -> Response:
        """tidegate's own: the folders whose files clients may name (``tidegate run`` stages into the first)."""
        return JsonResponse({"stagingRoots": [str(root) for root in self.service.staging.roots]})

    async def healthz(self, request: Request) -> Response:
        return JsonResponse({"status": "ok"})
