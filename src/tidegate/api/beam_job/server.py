"""Beam's Job API (``org.apache.beam.model.job_management.v1.JobService``) over the service layer.

Beam's PortableRunner, unmodified, submits here (``--runner=PortableRunner
--job_endpoint=localhost:8099``). ``Prepare`` keeps the pipeline and opens an artifact
staging session (Beam's own ``ArtifactStagingService``, on the same port, writing under
the data directory); ``Run`` creates an ordinary tidegate batch job from it: a
``google.dataflow.v1beta3.Job`` whose ``environment.sdkPipelineOptions`` carries the
pipeline options, with the runner-API pipeline kept as the job's ``pipeline.pb`` and the
staged files embedded in its environments. The Beam job id is the tidegate job id, so
the job is the same one that REST, gRPC and the CLI show.

Beam's Job API has no projects: jobs go to project ``portable`` unless the pipeline
options name one (``--project``, ``--region``). A ``--job_name`` that an active job has is
refused with ALREADY_EXISTS (PortableRunner would otherwise follow that other job). Every
call passes the gate (the ``authorization`` metadata); as Beam's calls name no project, a
caller sees only the jobs of the projects it can read, and any other job id is NOT_FOUND. States
and messages are read from the store; the streams poll it (woken early by changes made in
this process).
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
from apache_beam.portability.api import (
    beam_artifact_api_pb2_grpc,
    beam_job_api_pb2,
    beam_job_api_pb2_grpc,
    beam_runner_api_pb2,
    endpoints_pb2,
)

from tidegate.api import wire
from tidegate.api.beam_job.convert import (
    beam_state,
    is_streaming,
    job_name,
    labels_option,
    message_to_beam,
    metrics_to_monitoring_infos,
    options_struct,
    pipeline_options,
    timestamp,
)
from tidegate.api.beam_job.staging import StagingSessions
from tidegate.api.grpc_server import authorization, error_status
from tidegate.auth import Caller, Gate, Permission
from tidegate.errors import InvalidArgument, NotFound, PermissionDenied, TidegateError, Unavailable
from tidegate.jobspec import PIPELINE_ARTIFACT, read_spec
from tidegate.lifecycle import JobState, JobType
from tidegate.model import Job, ListFilter, MessageImportance
from tidegate.service.jobs import MAX_PAGE_SIZE, JobService, check_scope

__all__ = ["DEFAULT_PROJECT", "BeamJobApi", "BeamJobServer"]

log = logging.getLogger(__name__)
jobs_pb: Any = beam_job_api_pb2
runner_pb: Any = beam_runner_api_pb2
job_api_grpc: Any = beam_job_api_pb2_grpc
artifact_api_grpc: Any = beam_artifact_api_pb2_grpc

DEFAULT_PROJECT = "portable"
"""The project of jobs whose pipeline options name none."""

_PREPARATION_TTL_S = 3600.0
_MAX_MESSAGE_BYTES = 512 * 1024 * 1024
_MESSAGE_PAGE = 500
_ANY = ("", "0.0.0.0", "::")
_OPTIONS = (
    ("project", "the tidegate project to create the job in (default: portable)"),
    ("region", "the location to create the job in (default: the server's default location)"),
    ("job_name", "the job's name (made Dataflow-valid; default: 'job' and the time)"),
)
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class _Preparation:
    pipeline: Any
    options: dict[str, Any]
    name: str
    project: str
    location: str
    prepared_at: float


def _abort(context: Any, exc: Exception, method: str) -> None:
    """End the call with the error's gRPC status (INTERNAL for anything but a tidegate error)."""
    if isinstance(exc, TidegateError):
        context.abort_with_status(error_status(exc))
    log.exception("internal error in the Beam Job API's %s", method)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")


def _unary(method: F) -> F:
    """Answer a unary call; errors become their gRPC status."""

    @functools.wraps(method)
    def call(self: BeamJobApi, request: Any, context: Any) -> Any:
        try:
            return method(self, request, context)
        except Exception as exc:
            _abort(context, exc, method.__name__)

    return call  # type: ignore[return-value]


def _stream(method: F) -> F:
    """``_unary`` for server-streaming calls."""

    @functools.wraps(method)
    def call(self: BeamJobApi, request: Any, context: Any) -> Iterator[Any]:
        try:
            yield from method(self, request, context)
        except Exception as exc:
            _abort(context, exc, method.__name__)

    return call  # type: ignore[return-value]


class BeamJobApi:
    """The handlers of Beam's ``JobService``; one instance per server."""

    def __init__(
        self,
        service: JobService,
        staging_dir: Path,
        staging_url: str,
        *,
        poll_s: float = 0.5,
        gate: Gate | None = None,
    ) -> None:
        self._service = service
        self._gate = gate or Gate(service.store)
        self._staging_url = staging_url
        self._poll_s = poll_s
        self.staging = StagingSessions(staging_dir)
        self._lock = threading.Lock()
        self._preparations: dict[str, _Preparation] = {}
        self._ran: dict[str, tuple[str, float, str]] = {}
        """Job ids by preparation id, so that a repeated Run answers the same job."""
        self._projects = {DEFAULT_PROJECT}
        self._changed = threading.Condition()
        self._generation = 0
        self._closed = False
        service.subscribe(self._wake)

    def _wake(self, job: Job | None = None) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def close(self) -> None:
        """End every open stream (the server is stopping)."""
        self._closed = True
        self._wake()

    # -- submitting ------------------------------------------------------------------------

    @_unary
    def Prepare(self, request: Any, context: Any) -> Any:
        """Keep the pipeline and its options; open an artifact staging session for it."""
        caller = self._caller(context)
        options = pipeline_options(request.pipeline_options)
        if is_streaming(request.pipeline, options):
            raise InvalidArgument(
                "tidegate cannot run Beam streaming pipelines: no Python local runner can run an unbounded"
                " source or drain. Run streaming jobs on tidegate's Flink engine (a PyFlink program or Flink"
                " SQL script: `tidegate run --engine flink PROGRAM`), or submit this pipeline as a batch job.",
                reason="STREAMING_BEAM_UNSUPPORTED",
            )
        project = str(options.get("project") or DEFAULT_PROJECT)
        location = str(options.get("region") or self._service.default_location)
        caller.require(Permission.JOBS_CREATE, project)
        check_scope(project, location)
        preparation_id = uuid.uuid4().hex
        name = job_name(request.job_name, options, datetime.now(UTC))
        self.staging.open(preparation_id, request.pipeline)
        with self._lock:
            stale = self._forget_stale_preparations()
            self._preparations[preparation_id] = _Preparation(
                request.pipeline, options, name, project, location, time.monotonic()
            )
            self._projects.add(project)
        for token in stale:
            self.staging.close(token)
        return jobs_pb.PrepareJobResponse(
            preparation_id=preparation_id,
            artifact_staging_endpoint=endpoints_pb2.ApiServiceDescriptor(url=self._staging_url),
            staging_session_token=preparation_id,
        )

    def _forget_stale_preparations(self) -> list[str]:
        """Drop preparations never run (and old Run answers) after an hour; returns the dropped preparations."""
        cutoff = time.monotonic() - _PREPARATION_TTL_S
        stale = [p for p, prep in self._preparations.items() if prep.prepared_at < cutoff]
        for preparation_id in stale:
            del self._preparations[preparation_id]
        for preparation_id in [p for p, (_, ran_at, _) in self._ran.items() if ran_at < cutoff]:
            del self._ran[preparation_id]
        return stale

    @_unary
    def Run(self, request: Any, context: Any) -> Any:
        """Create the prepared job; it starts as every tidegate job does (STOPPED, then PENDING …)."""
        preparation_id = request.preparation_id
        caller = self._caller(context)
        with self._lock:
            prepared = self._preparations.get(preparation_id)
            if prepared is not None and caller.may(Permission.JOBS_CREATE, prepared.project):
                del self._preparations[preparation_id]
            else:
                prepared = None
            ran = self._ran.get(preparation_id)
        if prepared is None:
            if ran and caller.may(Permission.JOBS_GET, ran[2]):
                return jobs_pb.RunJobResponse(job_id=ran[0])
            raise NotFound(f"no prepared job {preparation_id!r} (prepare it first)", reason="PREPARATION_NOT_FOUND")
        pipeline = self.staging.embed(preparation_id, prepared.pipeline)
        spec = wire.JobPb(name=prepared.name, type_=int(JobType.JOB_TYPE_BATCH), client_request_id=preparation_id)
        spec.labels.update(labels_option(prepared.options.get("labels")))
        spec.environment.sdk_pipeline_options.update({"options": prepared.options})
        new = wire.job_from_pb(spec, prepared.project, prepared.location)
        new = replace(new, artifacts={PIPELINE_ARTIFACT: pipeline.SerializeToString()}, caller=caller.name)
        # PortableRunner follows whatever job id Run answers: a name an active job has is ALREADY_EXISTS.
        job = self._service.create_new_job(new)
        with self._lock:
            self._ran[preparation_id] = (job.id, time.monotonic(), job.project_id)
        return jobs_pb.RunJobResponse(job_id=job.id)

    # -- reading -----------------------------------------------------------------------------

    def _caller(self, context: Any) -> Caller:
        return self._gate.caller(authorization(context.invocation_metadata()))

    def _job(self, job_id: str, context: Any, permission: Permission) -> tuple[Job, Caller]:
        """The job and the caller, if it may do this to the job.

        Beam's calls name no project: a job of a project the caller cannot read is NOT_FOUND,
        as one that does not exist, so that a job id tells it nothing.
        """
        caller = self._caller(context)
        if not job_id:
            raise InvalidArgument("job_id is required", reason="MISSING_JOB_ID")
        try:
            job = self._service.find_job(job_id)
        except NotFound:
            job = None
        if job is None or not caller.may(Permission.JOBS_GET, job.project_id):
            raise NotFound(f"No job with id {job_id}", reason="JOB_NOT_FOUND") from None
        if not caller.may(permission, job.project_id):
            raise PermissionDenied(
                f"Permission '{permission.value}' denied on job {job_id}", metadata={"permission": permission.value}
            )
        return job, caller

    @_unary
    def GetJobs(self, request: Any, context: Any) -> Any:
        """Beam jobs of the projects the caller can read: the active ones, and all of project ``portable`` and
        of the projects seen since start."""
        caller = self._caller(context)
        active = [job for job in self._service.active_jobs() if caller.may(Permission.JOBS_LIST, job.project_id)]
        with self._lock:
            seen = self._projects | {job.project_id for job in active}
            projects = sorted(p for p in seen if caller.may(Permission.JOBS_LIST, p))
        found = {job.id: job for job in active}
        for project in projects:
            page = self._service.list_jobs(project, None, ListFilter.ALL, MAX_PAGE_SIZE, aggregated=True)
            found.update((job.id, job) for job in page.items)
        jobs = sorted(found.values(), key=lambda job: job.create_time, reverse=True)
        return jobs_pb.GetJobsResponse(
            job_info=[
                jobs_pb.JobInfo(
                    job_id=job.id,
                    job_name=job.name,
                    pipeline_options=options_struct(spec.options),
                    state=beam_state(job.current_state),
                )
                for job in jobs
                if (spec := read_spec(job)).engine == "beam"
            ]
        )

    @_unary
    def GetState(self, request: Any, context: Any) -> Any:
        """The job's state now, mapped onto Beam's states."""
        job, _ = self._job(request.job_id, context, Permission.JOBS_GET)
        return jobs_pb.JobStateEvent(state=beam_state(job.current_state), timestamp=timestamp(job.current_state_time))

    @_unary
    def GetPipeline(self, request: Any, context: Any) -> Any:
        """The runner-API pipeline the job runs (staged files embedded)."""
        job, _ = self._job(request.job_id, context, Permission.JOBS_GET)
        data = self._service.artifact(job.project_id, job.location, job.id, PIPELINE_ARTIFACT)
        if data is None:
            raise NotFound(f"job {job.id} carries no Beam pipeline", reason="NO_PIPELINE")
        return jobs_pb.GetJobPipelineResponse(pipeline=runner_pb.Pipeline.FromString(data))

    @_unary
    def GetJobMetrics(self, request: Any, context: Any) -> Any:
        """Element counts and user metrics as MonitoringInfos, attempted and committed alike."""
        job, _ = self._job(request.job_id, context, Permission.METRICS_GET)
        _, metrics = self._service.metrics(job.project_id, job.location, job.id)
        infos = metrics_to_monitoring_infos(metrics)
        return jobs_pb.GetJobMetricsResponse(metrics=jobs_pb.MetricResults(attempted=infos, committed=infos))

    @_unary
    def DescribePipelineOptions(self, request: Any, context: Any) -> Any:
        """Options a client without Google Cloud's options can still pass (``--project``, ``--region``)."""
        self._caller(context)
        string = jobs_pb.PipelineOptionType.STRING
        return jobs_pb.DescribePipelineOptionsResponse(
            options=[
                jobs_pb.PipelineOptionDescriptor(name=name, type=string, description=text, group="tidegate")
                for name, text in _OPTIONS
            ]
        )

    # -- requests ----------------------------------------------------------------------------

    @_unary
    def Cancel(self, request: Any, context: Any) -> Any:
        """Request CANCELLED: the scheduler stops the job's processes (a PENDING job never starts)."""
        job, caller = self._job(request.job_id, context, Permission.JOBS_UPDATE)
        job = self._service.update_job(
            job.project_id, job.location, job.id, requested_state=JobState.JOB_STATE_CANCELLED, caller=caller.name
        )
        return jobs_pb.CancelJobResponse(state=beam_state(job.current_state))

    @_unary
    def Drain(self, request: Any, context: Any) -> Any:
        """Request DRAINED; a batch job cannot drain (FAILED_PRECONDITION), as on Dataflow."""
        job, caller = self._job(request.job_id, context, Permission.JOBS_UPDATE)
        drained = JobState.JOB_STATE_DRAINED
        job = self._service.update_job(
            job.project_id, job.location, job.id, requested_state=drained, caller=caller.name
        )
        return jobs_pb.DrainJobResponse(state=beam_state(job.current_state))

    # -- streams -----------------------------------------------------------------------------

    @_stream
    def GetStateStream(self, request: Any, context: Any) -> Iterator[Any]:
        """Every state the job has been in, then each change, until it ends."""
        job, _ = self._job(request.job_id, context, Permission.JOBS_GET)
        for kind, event in self._follow(job, context, messages=False):
            if kind == "state":
                yield event

    @_stream
    def GetMessageStream(self, request: Any, context: Any) -> Iterator[Any]:
        """The job's messages and state changes, until it ends (the client then reads the last error)."""
        job, _ = self._job(request.job_id, context, Permission.MESSAGES_LIST)
        for kind, event in self._follow(job, context, messages=True):
            if kind == "state":
                yield jobs_pb.JobMessagesResponse(state_response=event)
            else:
                yield jobs_pb.JobMessagesResponse(message_response=event)

    def _wait_for_change(self, seen: int) -> None:
        """Wait until a job changes in this process, or the poll interval passes (changes made elsewhere)."""
        with self._changed:
            self._changed.wait_for(lambda: self._generation != seen, timeout=self._poll_s)

    def _follow(self, job: Job, context: Any, *, messages: bool) -> Iterator[tuple[str, Any]]:
        """State events (deduplicated once mapped onto Beam's states) and messages, until the job ends."""
        context.add_callback(self._wake)
        changes_sent = 0
        last_state: int | None = None
        page_token, seen_on_page = "", 0
        while True:
            with self._changed:
                generation = self._generation
            current = self._service.get_job(job.project_id, job.location, job.id)
            history = self._service.history(job.project_id, job.location, job.id)
            for change in history[changes_sent:]:
                state = beam_state(change.target)
                if state != last_state:
                    last_state = state
                    yield "state", jobs_pb.JobStateEvent(state=state, timestamp=timestamp(change.time))
            changes_sent = len(history)
            while messages:  # pages from the start of the last one read: messages are only ever appended
                page = self._service.list_messages(
                    job.project_id,
                    job.location,
                    job.id,
                    MessageImportance.JOB_MESSAGE_IMPORTANCE_UNKNOWN,
                    page_size=_MESSAGE_PAGE,
                    page_token=page_token,
                )
                for message in page.items[seen_on_page:]:
                    yield "message", message_to_beam(message)
                if not page.next_page_token:
                    seen_on_page = len(page.items)
                    break
                page_token, seen_on_page = page.next_page_token, 0
            if current.current_state.terminal or not context.is_active():
                return
            if self._closed:
                raise Unavailable(
                    f"tidegate is stopping; job {job.id} goes on and can be followed again once it is back",
                    reason="SERVER_STOPPING",
                )
            self._wait_for_change(generation)


class BeamJobServer:
    """Beam's Job API and artifact staging service on one gRPC port."""

    def __init__(
        self,
        service: JobService,
        host: str,
        port: int,
        staging_dir: Path,
        *,
        max_workers: int = 128,
        gate: Gate | None = None,
    ) -> None:
        """Bind ``host:port`` (0 picks a free port); staged files go under ``staging_dir``. Not yet started."""
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="tidegate-beam-job-api"),
            options=[
                ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
                # Beam's clients ping while they wait on long streams; never answer with GOAWAY.
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.http2.max_ping_strikes", 0),
            ],
        )
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound = int(self._server.add_insecure_port(address))
        except RuntimeError as exc:
            raise OSError(f"cannot listen for Beam's Job API on {address}: {exc}") from exc
        if bound == 0:
            raise OSError(f"cannot listen for Beam's Job API on {address}")
        self.port = bound
        # The staging endpoint is handed to clients: a wildcard address is no place to connect to.
        public = "localhost" if host in ("127.0.0.1", "::1") else socket.gethostname() if host in _ANY else host
        public = f"[{public}]" if ":" in public else public
        self.api = BeamJobApi(service, staging_dir, f"{public}:{bound}", gate=gate)
        job_api_grpc.add_JobServiceServicer_to_server(self.api, self._server)
        artifact_api_grpc.add_ArtifactStagingServiceServicer_to_server(self.api.staging, self._server)

    def start(self) -> None:
        self._server.start()

    def stop(self, grace: float = 5) -> None:
        """End the open streams, then stop serving."""
        self.api.close()
        self._server.stop(grace).wait()
