"""Dataflow's gRPC API, ``google.dataflow.v1beta3``, over the service layer.

The official client package ships the message classes but no service stubs or
``.proto`` files, so the methods are registered as generic handlers under Dataflow's
full names (``/google.dataflow.v1beta3.JobsV1Beta3/GetJob``, …) with the raw protobuf
classes as (de)serializers. Behaviour mirrors the REST adapter: an empty location
means the server's default location, as REST's legacy paths do.

Errors become their gRPC status codes, with a ``google.rpc.Status`` carrying a
``google.rpc.ErrorInfo`` detail in the trailing metadata, so the client raises
NotFound, FailedPrecondition, InvalidArgument or AlreadyExists with ``e.reason`` set.
Server reflection describes the services (``grpcurl localhost:PORT list``). Every call
passes the gate first: the ``authorization`` metadata must prove a caller with the
method's permission in the request's project (UNAUTHENTICATED, PERMISSION_DENIED).

The server is asyncio's (``grpc.aio``), on an event loop in a thread of its own: calls
answer on the loop as REST's do, and the few that take seconds (savepoints, template
launches) run in a small thread pool beside it. Python's thread-pool ``grpc.server``
spent a third more CPU per call, its threads contending for the interpreter
(``benchmarks/bench_grpc.py``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
from google.cloud import dataflow_v1beta3 as dataflow
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2
from grpc_status import rpc_status

from tidegate.api import offload, template_calls, wire
from tidegate.api.instrumentation import GrpcMetrics
from tidegate.auth import OPEN, Caller, Gate, Permission
from tidegate.errors import InvalidArgument, NotFound, TidegateError
from tidegate.lifecycle import JobState
from tidegate.model import ListFilter, MessageImportance
from tidegate.service.jobs import JobService

__all__ = [
    "ERROR_DOMAIN",
    "PACKAGE",
    "GrpcApi",
    "GrpcServer",
    "Method",
    "authorization",
    "error_status",
    "reflection_pool",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

PACKAGE = "google.dataflow.v1beta3"
ERROR_DOMAIN = "dataflow.googleapis.com"
_SERVICES_FILE = "tidegate/dataflow_v1beta3_services.proto"
"""The file that reflection shows the services in (the client package ships none)."""

_MESSAGES = (
    "CreateJobRequest",
    "GetJobRequest",
    "UpdateJobRequest",
    "ListJobsRequest",
    "ListJobsResponse",
    "CheckActiveJobsRequest",
    "CheckActiveJobsResponse",
    "SnapshotJobRequest",
    "Snapshot",
    "ListJobMessagesRequest",
    "ListJobMessagesResponse",
    "GetSnapshotRequest",
    "DeleteSnapshotRequest",
    "DeleteSnapshotResponse",
    "ListSnapshotsRequest",
    "ListSnapshotsResponse",
    "GetJobMetricsRequest",
    "JobMetrics",
    "GetJobExecutionDetailsRequest",
    "JobExecutionDetails",
    "GetStageExecutionDetailsRequest",
    "StageExecutionDetails",
)
_pb: dict[str, Any] = {name: getattr(dataflow, name).pb() for name in _MESSAGES} | template_calls.MESSAGES
"""The raw protobuf classes behind the client's proto-plus types, by name."""
_pb["Job"] = wire.JobPb
_BLOCKING = frozenset(
    {
        "SnapshotJob",
        "DeleteSnapshot",
        "CreateJobFromTemplate",
        "LaunchTemplate",
        "GetTemplate",
        "LaunchFlexTemplate",
        "GetJobMetrics",
        "GetJobExecutionDetails",
        "GetStageExecutionDetails",
    }
)
"""Methods that wait on an engine, files or a launcher (REST runs them in its thread pool too)."""
_READS = frozenset(
    {"GetJob", "ListJobs", "AggregatedListJobs", "CheckActiveJobs", "ListJobMessages", "GetSnapshot", "ListSnapshots"}
)
"""Methods that read the store: on the loop for SQLite, on a reader thread for PostgreSQL."""


@dataclass(frozen=True)
class Method:
    """One RPC: where it lives, its message types and the function answering it."""

    service: str
    """The service's short name, as in ``JobsV1Beta3``."""
    name: str
    request: Any
    """The raw protobuf class of the request."""
    response: Any
    call: Callable[..., Any]
    """The handler: the request and who makes it (a coroutine function when ``runs`` is "async")."""
    permission: Permission
    """What the call needs in the request's project."""
    runs: str = "inline"
    """Where it runs: "blocking" (it may take seconds: a savepoint, a template launch) in a thread pool,
    "write" in a batch of the committer's, "read" where the store's reads go, "async" a coroutine of its own."""

    @property
    def full_service(self) -> str:
        """The service's full name, as in ``google.dataflow.v1beta3.JobsV1Beta3``."""
        return f"{PACKAGE}.{self.service}"


def error_status(error: TidegateError) -> grpc.Status:
    """The error as a gRPC status with a ``google.rpc.ErrorInfo`` detail (``e.reason`` in the client)."""
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata)
    status = status_pb2.Status(code=code_pb2.Code.Value(error.status), message=error.message)
    status.details.add().Pack(info)
    return rpc_status.to_status(status)


@dataclass(frozen=True)
class _Undecodable:
    """A request that is no message of its method's type (invalid UTF-8 in a string, say)."""

    type_name: str


def _decoder(kind: Any) -> Callable[[bytes], Any]:
    """The request's deserializer: an undecodable request reaches the handler, which refuses it.

    gRPC itself would answer INTERNAL ("Exception deserializing request"): it is the
    client's mistake, INVALID_ARGUMENT.
    """

    def decode(data: bytes) -> Any:
        try:
            return kind.FromString(data)
        except DecodeError:
            return _Undecodable(kind.DESCRIPTOR.full_name)

    return decode


def authorization(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The ``authorization`` entry of a call's metadata, as Google's clients send their credentials."""
    for key, value in metadata or ():
        if key == "authorization":
            return value.decode() if isinstance(value, bytes) else value
    return None


def _guard(
    method: Method, pool: ThreadPoolExecutor, gate: Gate, service: JobService
) -> Callable[[Any, grpc.aio.ServicerContext], Any]:
    @functools.wraps(method.call)
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, _Undecodable):
            error = InvalidArgument(
                f"the request is not a valid {request.type_name} (a string that is not UTF-8, or bytes that are"
                " no message of that type)",
                reason="INVALID_REQUEST",
            )
            await context.abort_with_status(error_status(error))
        try:
            credential = authorization(context.invocation_metadata())
            caller = gate.check(credential, method.permission, request.project_id)
            if method.runs == "blocking":
                return await asyncio.get_running_loop().run_in_executor(pool, method.call, request, caller)
            if method.runs == "write":
                return await offload.write(service, lambda: method.call(request, caller))
            if method.runs == "read":
                return await offload.read(service, lambda: method.call(request, caller))
            if method.runs == "async":
                return await method.call(request, caller)
            return method.call(request, caller)
        except TidegateError as error:
            await context.abort_with_status(error_status(error))
        except Exception as exc:
            log.exception("internal error in %s/%s", method.full_service, method.name)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")

    return guarded


def _runs(name: str) -> str:
    if name in _BLOCKING:
        return "blocking"
    if name in _READS:
        return "read"
    return "async" if name in ("CreateJob", "UpdateJob") else "inline"


def _location(request: Any) -> str | None:
    """The request's location; ``None`` (the server's default) when empty."""
    return str(request.location) or None


def _time(request: Any, field: str) -> datetime | None:
    if not request.HasField(field):
        return None
    when: datetime = getattr(request, field).ToDatetime(tzinfo=UTC)
    return when


def _enum(kind: Callable[[int], Any], value: int, what: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise InvalidArgument(f"invalid value {value} for {what}", reason="INVALID_ENUM_VALUE") from None


class GrpcApi:
    """The handlers of Dataflow's services (jobs, messages, snapshots, metrics, templates); one per server."""

    def __init__(self, service: JobService) -> None:
        self.service = service
        self._encoded = wire.Encodings()
        """GetJob's answers, serialized, by view."""

    def methods(self) -> list[Method]:
        """Every method this API answers, by service."""
        p = Permission
        Table = list[tuple[str, str, str, Callable[[Any, Caller], Any], Permission]]
        jobs: Table = [
            ("CreateJob", "CreateJobRequest", "Job", self.create_job, p.JOBS_CREATE),
            ("GetJob", "GetJobRequest", "Job", self.get_job, p.JOBS_GET),
            ("UpdateJob", "UpdateJobRequest", "Job", self.update_job, p.JOBS_UPDATE),
            ("ListJobs", "ListJobsRequest", "ListJobsResponse", self.list_jobs, p.JOBS_LIST),
            ("AggregatedListJobs", "ListJobsRequest", "ListJobsResponse", self.aggregated_list_jobs, p.JOBS_LIST),
            (
                "CheckActiveJobs",
                "CheckActiveJobsRequest",
                "CheckActiveJobsResponse",
                self.check_active_jobs,
                p.JOBS_LIST,
            ),
            ("SnapshotJob", "SnapshotJobRequest", "Snapshot", self.snapshot_job, p.JOBS_SNAPSHOT),
        ]
        messages: Table = [
            (
                "ListJobMessages",
                "ListJobMessagesRequest",
                "ListJobMessagesResponse",
                self.list_job_messages,
                p.MESSAGES_LIST,
            ),
        ]
        snapshots: Table = [
            ("GetSnapshot", "GetSnapshotRequest", "Snapshot", self.get_snapshot, p.SNAPSHOTS_GET),
            (
                "DeleteSnapshot",
                "DeleteSnapshotRequest",
                "DeleteSnapshotResponse",
                self.delete_snapshot,
                p.SNAPSHOTS_DELETE,
            ),
            ("ListSnapshots", "ListSnapshotsRequest", "ListSnapshotsResponse", self.list_snapshots, p.SNAPSHOTS_LIST),
        ]
        metrics: Table = [
            ("GetJobMetrics", "GetJobMetricsRequest", "JobMetrics", self.get_job_metrics, p.METRICS_GET),
            (
                "GetJobExecutionDetails",
                "GetJobExecutionDetailsRequest",
                "JobExecutionDetails",
                self.get_job_execution_details,
                p.METRICS_GET,
            ),
            (
                "GetStageExecutionDetails",
                "GetStageExecutionDetailsRequest",
                "StageExecutionDetails",
                self.get_stage_execution_details,
                p.METRICS_GET,
            ),
        ]
        calls = template_calls.TemplateCalls(self.service)
        launch = p.TEMPLATES_LAUNCH
        templates: Table = [
            ("CreateJobFromTemplate", "CreateJobFromTemplateRequest", "Job", calls.create_job_from_template, launch),
            ("LaunchTemplate", "LaunchTemplateRequest", "LaunchTemplateResponse", calls.launch_template, launch),
            ("GetTemplate", "GetTemplateRequest", "GetTemplateResponse", calls.get_template, p.TEMPLATES_GET),
        ]
        launch_flex = calls.launch_flex_template
        flex: Table = [
            ("LaunchFlexTemplate", "LaunchFlexTemplateRequest", "LaunchFlexTemplateResponse", launch_flex, launch),
        ]
        return [
            Method(service, name, _pb[request], _pb[response], call, permission, runs=_runs(name))
            for service, table in (
                ("JobsV1Beta3", jobs),
                ("MessagesV1Beta3", messages),
                ("SnapshotsV1Beta3", snapshots),
                ("MetricsV1Beta3", metrics),
                ("TemplatesService", templates),
                ("FlexTemplatesService", flex),
            )
            for name, request, response, call, permission in table
        ]

    # -- JobsV1Beta3 ------------------------------------------------------------------

    async def create_job(self, request: Any, caller: Caller = OPEN) -> Any:
        """CreateJob, as over REST: the new job (STOPPED, or held), or the job that is there (OK, as Dataflow)."""
        job = request.job
        if request.replace_job_id and not job.replace_job_id:
            job.replace_job_id = request.replace_job_id
        location = _location(request) or self.service.default_location
        new = wire.job_from_pb(job, request.project_id, location, caller.name)
        created = await offload.submit(self.service, new)
        return wire.job_to_pb(created, request.view)

    def get_job(self, request: Any, caller: Caller = OPEN) -> Any:
        """GetJob, in the requested view (JOB_VIEW_UNKNOWN means the summary)."""
        job = self.service.get_job(request.project_id, _location(request), request.job_id)
        view = int(request.view)
        # Bytes, which ``_serializer`` sends as they are.
        return self._encoded.get(job, (view,), lambda: wire.job_to_pb(job, view).SerializeToString())

    async def update_job(self, request: Any, caller: Caller = OPEN) -> Any:
        """UpdateJob: a ``requested_state``, new labels under ``update_mask`` ``labels``, or new
        ``runtime_updatable_params`` (a rescale, which asks the engine: on a thread, not in a batch of writes)."""
        requested = _enum(JobState, request.job.requested_state, "requested_state")
        mask = list(request.update_mask.paths)

        def call() -> Any:
            return self.service.update_job(
                request.project_id,
                _location(request),
                request.job_id,
                requested_state=requested,
                labels=dict(request.job.labels),
                update_mask=mask,
                caller=caller.name,
                named=wire.update_names(request.job),
                runtime_params=wire.runtime_body(request.job),
            )

        if JobService.updates_runtime_params(mask):
            job = await asyncio.to_thread(call)
        else:
            job = await offload.write(self.service, call)
        return wire.job_to_pb(job, wire.JobView.SUMMARY)

    def list_jobs(self, request: Any, caller: Caller = OPEN) -> Any:
        """ListJobs in one location (the default one when empty)."""
        return self._list(request, aggregated=False)

    def aggregated_list_jobs(self, request: Any, caller: Caller = OPEN) -> Any:
        """AggregatedListJobs: the project's jobs in every location."""
        return self._list(request, aggregated=True)

    def _list(self, request: Any, *, aggregated: bool) -> Any:
        page = self.service.list_jobs(
            request.project_id,
            _location(request),
            _enum(ListFilter, request.filter, "filter"),
            request.page_size,
            request.page_token,
            request.name,
            aggregated=aggregated,
        )
        response = _pb["ListJobsResponse"]()
        for job in page.items:
            response.jobs.append(wire.job_to_pb(job, request.view))
        response.next_page_token = page.next_page_token
        return response

    def check_active_jobs(self, request: Any, caller: Caller = OPEN) -> Any:
        """CheckActiveJobs: whether the project has any job not yet in a terminal state, anywhere."""
        page = self.service.list_jobs(request.project_id, None, ListFilter.ACTIVE, 1, aggregated=True)
        return _pb["CheckActiveJobsResponse"](active_jobs_exist=bool(page.items))

    def snapshot_job(self, request: Any, caller: Caller = OPEN) -> Any:
        """SnapshotJob: a savepoint of a RUNNING streaming job."""
        snapshot = self.service.snapshot_job(
            request.project_id,
            _location(request),
            request.job_id,
            ttl=request.ttl.ToTimedelta() if request.HasField("ttl") else None,
            description=request.description,
            snapshot_sources=request.snapshot_sources,
            caller=caller.name,
        )
        return wire.snapshot_to_pb(snapshot)

    # -- SnapshotsV1Beta3 -------------------------------------------------------------

    def get_snapshot(self, request: Any, caller: Caller = OPEN) -> Any:
        snapshot = self.service.get_snapshot(request.project_id, _location(request), request.snapshot_id)
        return wire.snapshot_to_pb(snapshot)

    def delete_snapshot(self, request: Any, caller: Caller = OPEN) -> Any:
        self.service.delete_snapshot(request.project_id, _location(request), request.snapshot_id, caller=caller.name)
        return _pb["DeleteSnapshotResponse"]()

    def list_snapshots(self, request: Any, caller: Caller = OPEN) -> Any:
        response = _pb["ListSnapshotsResponse"]()
        for snapshot in self.service.list_snapshots(request.project_id, _location(request), request.job_id):
            response.snapshots.append(wire.snapshot_to_pb(snapshot))
        return response

    # -- MetricsV1Beta3 ---------------------------------------------------------------

    def get_job_metrics(self, request: Any, caller: Caller = OPEN) -> Any:
        """GetJobMetrics: live while the job runs, final once it has ended (``start_time`` is checked, unused)."""
        _time(request, "start_time")
        _, metrics = self.service.metrics(request.project_id, _location(request), request.job_id)
        return wire.metrics_to_pb(metrics, self.service.clock())

    def get_job_execution_details(self, request: Any, caller: Caller = OPEN) -> Any:
        """GetJobExecutionDetails: a summary per stage (one page holds them all)."""
        _, stages = self.service.stages(request.project_id, _location(request), request.job_id)
        return wire.stages_to_pb(stages)

    def get_stage_execution_details(self, request: Any, caller: Caller = OPEN) -> Any:
        """GetStageExecutionDetails: tidegate's workers are local processes, so a stage lists none."""
        job, stages = self.service.stages(request.project_id, _location(request), request.job_id)
        if request.stage_id not in {s.stage_id for s in stages}:
            raise NotFound(f"Job {job.id} has no stage {request.stage_id}", reason="STAGE_NOT_FOUND")
        return _pb["StageExecutionDetails"]()

    # -- MessagesV1Beta3 --------------------------------------------------------------

    def list_job_messages(self, request: Any, caller: Caller = OPEN) -> Any:
        """ListJobMessages, oldest first, at or above ``minimum_importance``."""
        page = self.service.list_messages(
            request.project_id,
            _location(request),
            request.job_id,
            _enum(MessageImportance, request.minimum_importance, "minimum_importance"),
            _time(request, "start_time"),
            _time(request, "end_time"),
            request.page_size,
            request.page_token,
        )
        response = _pb["ListJobMessagesResponse"]()
        for message in page.items:
            response.job_messages.append(wire.message_to_pb(message))
        if not request.page_token:  # the job's autoscaling events come with its first page of messages
            for event in self.service.autoscaling_events(
                request.project_id,
                _location(request),
                request.job_id,
                _time(request, "start_time"),
                _time(request, "end_time"),
            ):
                response.autoscaling_events.append(wire.autoscaling_event_to_pb(event))
        response.next_page_token = page.next_page_token
        return response


def _serializer(kind: Any) -> Callable[[Any], bytes]:
    """The response's serializer: a message of ``kind``, or the bytes of one a handler kept serialized."""

    def encode(message: Any) -> bytes:
        return message if type(message) is bytes else kind.SerializeToString(message)

    return encode


def _handlers(
    methods: Iterable[Method], pool: ThreadPoolExecutor, gate: Gate, service: JobService
) -> list[grpc.GenericRpcHandler]:
    by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for method in methods:
        by_service.setdefault(method.full_service, {})[method.name] = grpc.unary_unary_rpc_method_handler(
            _guard(method, pool, gate, service),
            request_deserializer=_decoder(method.request),
            response_serializer=_serializer(method.response),
        )
    return [grpc.method_handlers_generic_handler(name, table) for name, table in by_service.items()]


def _add_file(pool: descriptor_pool.DescriptorPool, file: FileDescriptor, added: set[str]) -> None:
    if file.name in added:
        return
    for dependency in file.dependencies:
        _add_file(pool, dependency, added)
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    pool.Add(proto)
    added.add(file.name)


def reflection_pool(methods: Iterable[Method]) -> descriptor_pool.DescriptorPool:
    """A descriptor pool holding the messages (from the client's classes) and the services built from ``methods``."""
    methods = list(methods)
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()
    files: dict[str, FileDescriptor] = {}
    for method in methods:
        for kind in (method.request, method.response):
            files[kind.DESCRIPTOR.file.name] = kind.DESCRIPTOR.file
    for file in [*files.values(), reflection_pb2.DESCRIPTOR]:
        _add_file(pool, file, added)
    services = descriptor_pb2.FileDescriptorProto(
        name=_SERVICES_FILE, package=PACKAGE, syntax="proto3", dependency=sorted(files)
    )
    by_name: dict[str, descriptor_pb2.ServiceDescriptorProto] = {}
    for method in methods:
        if method.service not in by_name:
            by_name[method.service] = services.service.add(name=method.service)
        by_name[method.service].method.add(
            name=method.name,
            input_type="." + method.request.DESCRIPTOR.full_name,
            output_type="." + method.response.DESCRIPTOR.full_name,
        )
    pool.Add(services)
    return pool


class GrpcServer:
    """Dataflow's gRPC services over ``service``, on ``host:port`` (0 picks a free port); bound, not started.

    The ``grpc.aio`` server lives on an event loop in the thread ``tidegate-grpc``;
    ``start`` and ``stop`` may be called from any other thread. Raises OSError when the
    port cannot be bound.
    """

    def __init__(
        self,
        service: JobService,
        host: str,
        port: int,
        *,
        max_workers: int = 8,
        gate: Gate | None = None,
        tls: tuple[bytes, bytes] | None = None,
    ) -> None:
        """``tls``: a PEM private key and certificate chain, to serve over TLS (None: plaintext)."""
        self._tls = tls
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="tidegate-grpc-blocking")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tidegate-grpc", daemon=True)
        self._thread.start()
        self._gate = gate or Gate(service.store)
        try:
            self._server, self.port = self._on_loop(self._bind(service, host, port))
        except BaseException:
            self._end_loop()
            raise

    async def _bind(self, service: JobService, host: str, port: int) -> tuple[grpc.aio.Server, int]:
        methods = GrpcApi(service).methods()
        server = grpc.aio.server(
            interceptors=[GrpcMetrics()],
            options=[
                ("grpc.max_receive_message_length", wire.MAX_BODY_BYTES),
                ("grpc.max_send_message_length", wire.MAX_BODY_BYTES),
                ("grpc.so_reuseport", 0),
            ],
        )
        server.add_generic_rpc_handlers(_handlers(methods, self._pool, self._gate, service))
        names = sorted({m.full_service for m in methods})
        reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server, pool=reflection_pool(methods))
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if self._tls is None:
                bound = int(server.add_insecure_port(address))
            else:
                bound = int(server.add_secure_port(address, grpc.ssl_server_credentials([self._tls])))
        except RuntimeError as exc:
            raise OSError(f"cannot listen for gRPC on {address}: {exc}") from exc
        if bound == 0:
            raise OSError(f"cannot listen for gRPC on {address}")
        return server, bound

    def start(self) -> None:
        self._on_loop(self._server.start())

    def stop(self, grace: float | None = None) -> None:
        """Stop taking calls, give those under way ``grace`` seconds, then end the loop and its thread."""
        try:
            self._on_loop(self._server.stop(grace))
        finally:
            self._end_loop()

    def _on_loop(self, work: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def _end_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
