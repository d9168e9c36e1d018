"""The use cases, shared by every API surface.

No HTTP or gRPC types here: the adapters in ``tidegate.api`` parse requests into
these calls and turn the results and ``TidegateError``\\ s into their wire forms.
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from tidegate import telemetry
from tidegate.engines.flink_scaling import is_runtime_mask
from tidegate.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from tidegate.jobspec import PIPELINE_ARTIFACT, check_tidegate_section, parse_spec
from tidegate.lifecycle import ACTIVE_STATES, BEFORE_RUNNING, Actor, JobState, JobType, PlanKind, plan_request
from tidegate.model import (
    Job,
    JobGraph,
    JobMessage,
    ListFilter,
    LogEntry,
    MessageImportance,
    MetricValue,
    NewJob,
    Page,
    StageDetails,
    StateChange,
)
from tidegate.service.calls import DEFAULT_POOL_SIZE, Calls
from tidegate.service.graphs import GraphCases
from tidegate.service.rescaling import RescaleCases, snake
from tidegate.service.snapshots import SnapshotCases
from tidegate.service.staging import Staging
from tidegate.service.templates import TemplateCases
from tidegate.store import Change, CreateOutcome, Store
from tidegate.updates.compatibility import check_update, renames, with_state_uids

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "JobService", "RunObserver", "new_job_id"]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_JOB_NAME = re.compile(r"[a-z]([-a-z0-9]{0,1022}[a-z0-9])?")
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
_PROJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._-]{0,127}")
_LOCATION = re.compile(r"[a-z][a-z0-9-]{0,62}")


def new_job_id(now: datetime) -> str:
    """A job id in Dataflow's form: ``2026-11-28_12_00_00-1123456789012345678``.

    The 19 digits after the second are a 1, the microsecond (six digits) and twelve random
    digits, so ids sort by creation time down to the microsecond. The store's indexes on a
    job's id (its own, its history's, its messages') then take each new id at their end,
    where a random id would dirty another page of each at every create: measured, a batch
    of 20 creates wrote 146 pages to SQLite's log with random ids, 107 with these.
    """
    return f"{now:%Y-%m-%d_%H_%M_%S}-1{now.microsecond:06d}{secrets.randbelow(10**12):012d}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def check_labels(labels: Mapping[str, str]) -> None:
    """Dataflow's label rules: at most 64; lowercase keys and values of at most 63 characters."""
    if len(labels) > 64:
        raise InvalidArgument(f"a job has at most 64 labels, not {len(labels)}", reason="INVALID_LABELS")
    for key, value in labels.items():
        if not _LABEL_KEY.fullmatch(key):
            raise InvalidArgument(
                f"invalid label key {key!r}: it must start with a lowercase letter and hold at most 63"
                " lowercase letters, digits, '_' or '-'",
                reason="INVALID_LABELS",
            )
        if not _LABEL_VALUE.fullmatch(value):
            raise InvalidArgument(
                f"invalid value {value!r} for label {key!r}: at most 63 lowercase letters, digits, '_' or '-'",
                reason="INVALID_LABELS",
            )


def check_scope(project_id: str, location: str | None) -> None:
    if not _PROJECT.fullmatch(project_id):
        raise InvalidArgument(f"invalid project id {project_id!r}", reason="INVALID_PROJECT")
    if location is not None and not _LOCATION.fullmatch(location):
        raise InvalidArgument(f"invalid location {location!r}", reason="INVALID_LOCATION")


class RunObserver(Protocol):
    """What the service asks of the scheduler about a job's runs (metrics, stages)."""

    def metrics(self, job: Job) -> list[MetricValue]: ...

    def stages(self, job: Job) -> list[StageDetails]: ...

    def plan(self, job: Job) -> JobGraph | None: ...


def _unchanged_by(named: Mapping[str, str] | None, job: Job) -> Job:
    """The job, if an UpdateJob body's ``named`` fields (id, projectId, location, name) are its own."""
    own = {"id": job.id, "projectId": job.project_id, "location": job.location, "name": job.name}
    for field, value in (named or {}).items():
        if value != own[field]:
            raise InvalidArgument(
                f"UpdateJob cannot change a job's {field}: the body says {value[:200]!r}, job {job.id}"
                f" has {own[field]!r}",
                reason="IMMUTABLE_FIELD",
            )
    return job


class JobService(SnapshotCases, TemplateCases, GraphCases, RescaleCases):
    """Create, read, list and update jobs; take service-side edges for the scheduler."""

    def __init__(
        self,
        store: Store,
        *,
        default_location: str = "us-central1",
        clock: Callable[[], datetime] = _utcnow,
        pool_size: int = DEFAULT_POOL_SIZE,
        staging: Staging | None = None,
    ) -> None:
        self.store = store
        self.default_location = default_location
        self.staging = staging or Staging()
        """Where staged files may be read from (none: no local file)."""
        self.clock = clock
        self._listeners: list[Callable[[Job], None]] = []
        self.observer: RunObserver | None = None
        """Set by the scheduler when one runs in this process."""
        self.calls = Calls(store, pool_size)
        """Where the API runs its calls into this service (group-committed writes, pooled reads)."""

    def subscribe(self, listener: Callable[[Job], None]) -> None:
        """Call ``listener(job)`` after every create and every change (the scheduler wakes on it)."""
        self._listeners.append(listener)

    def _change(
        self, job_id: str, decide: Callable[[Job], Change | None], project_id: str | None = None
    ) -> tuple[Job, bool]:
        """``store.change_job``, with the state change it made counted (``tidegate_job_transitions_total``)."""
        seen: list[JobState] = []

        def watched(job: Job) -> Change | None:
            seen.append(job.current_state)
            return decide(job)

        job, changed = self.store.change_job(job_id, watched, self.clock(), project_id)
        if changed and seen and job.current_state is not seen[-1]:
            telemetry.job_transition(seen[-1].name, job.current_state.name)
        return job, changed

    def _notify(self, job: Job) -> Job:
        """Tell the listeners of a change, once it is committed (a call in a batch commits with the batch)."""
        for listener in self._listeners:
            self.store.after_commit(functools.partial(listener, job))
        return job

    def close(self) -> None:
        """Stop the threads the API's calls run on; the store stays open."""
        self.calls.close()

    # -- create and read -------------------------------------------------------------

    def create_job(self, new: NewJob) -> Job:
        """CreateJob as Dataflow answers it: the new job, or the job that is there (see ``submit_job``)."""
        return self.submit_job(new)[0]

    def create_new_job(self, new: NewJob) -> Job:
        """Create a job, refusing (ALREADY_EXISTS) a name an active job has: for clients that cannot tell.

        A create path whose client would take any job it is answered for its own (template
        launches, Beam's Job API) uses this: ``create_job`` would hand it the other job.
        A repeat of the client's own create still answers its job.
        """
        job, outcome = self.submit_job(new)
        if outcome is CreateOutcome.NAME_TAKEN:
            raise AlreadyExists(
                f"There is already an active job named {job.name} with id: {job.id}. If you want to submit"
                " a second job, try again by setting a different name.",
                reason="JOB_NAME_ALREADY_EXISTS",
                metadata={"jobId": job.id, "jobName": job.name},
            )
        if outcome is CreateOutcome.ALREADY_UPDATED:
            raise AlreadyExists(
                f"Job {new.replace_job_id} has already been updated into job {job.id} and cannot be updated again",
                reason="JOB_ALREADY_UPDATED",
                metadata={"jobId": job.id, "replaceJobId": new.replace_job_id},
            )
        return job

    def submit_job(self, new: NewJob) -> tuple[Job, CreateOutcome]:
        """Create a job in STOPPED (held when it asks for ``JOB_STATE_STOPPED``), or answer the job that is there.

        As Dataflow: a create that repeats an earlier one (same name and ``clientRequestId``)
        answers that job; one whose name an active job has answers that job, which carries
        its own ``clientRequestId``; one whose ``replaceJobId`` names a job already UPDATED
        answers the job that replaced it. Those create nothing. Bad input raises first.
        """
        prepared = self.prepare_job(new)
        return prepared if isinstance(prepared, tuple) else self.store_job(prepared)

    def prepare_job(self, new: NewJob) -> NewJob | tuple[Job, CreateOutcome]:
        """The first half of ``submit_job``, which writes nothing: the request checked and its staged
        files read (the job as it will be stored), or the answer when the create makes nothing."""
        new = self.checked_request(new)
        answered = self._answered(new)
        if answered is not None:
            return answered
        return self._checked_job(new)

    @staticmethod
    def reads_files(new: NewJob) -> bool:
        """Whether preparing ``new`` reads a staged pipeline or a program (slow: not on an event loop)."""
        spec = parse_spec(new.spec, new.type)
        return bool(spec.pipeline_url or spec.program)

    def store_job(self, new: NewJob) -> tuple[Job, CreateOutcome]:
        """The second half of ``submit_job``: the prepared job stored (or the one that is there answered)."""
        now = self.clock()
        held = new.requested_state is JobState.JOB_STATE_STOPPED
        hint = "held in JOB_STATE_STOPPED until it is started (requestedState JOB_STATE_RUNNING)" if held else ""
        job, outcome = self.store.create_job(new, new_job_id(now), now, hint)
        if outcome is not CreateOutcome.CREATED:
            return job, outcome
        telemetry.job_created()
        return self._notify(job), outcome

    def check_new_job(self, new: NewJob) -> None:
        """Every check ``create_job`` makes (its staged files read), without creating the job."""
        self._checked_job(self.checked_request(new))

    def _answered(self, new: NewJob) -> tuple[Job, CreateOutcome] | None:
        """The job a create answers without checking the job it describes: its own earlier one, or an update's."""
        repeated = self.store.repeated_job(new)
        if repeated is not None:  # a retry of a create (an update too: its first attempt may have made it)
            return repeated, CreateOutcome.REPEATED
        if new.replace_job_id:
            old = self.get_job(new.project_id, new.location, new.replace_job_id)
            if old.current_state is JobState.JOB_STATE_UPDATED and old.replaced_by_job_id:
                return self.store.get_job(old.replaced_by_job_id), CreateOutcome.ALREADY_UPDATED
        return None

    def checked_request(self, new: NewJob) -> NewJob:
        """The request's own fields checked, defaults set; raises INVALID_ARGUMENT on bad input."""
        check_scope(new.project_id, new.location)
        if not _JOB_NAME.fullmatch(new.name):
            raise InvalidArgument(
                f"invalid job name {new.name!r}: it must match [a-z]([-a-z0-9]{{0,1022}}[a-z0-9])?",
                reason="INVALID_JOB_NAME",
            )
        check_labels(new.labels)
        if new.requested_state in (JobState.JOB_STATE_UNKNOWN, JobState.JOB_STATE_RUNNING):
            new = replace(new, requested_state=JobState.JOB_STATE_RUNNING)
        elif new.requested_state is not JobState.JOB_STATE_STOPPED:
            raise InvalidArgument(
                f"a job can be created only running or held (JOB_STATE_STOPPED), not {new.requested_state.name}",
                reason="INVALID_REQUESTED_STATE",
            )
        if new.type is JobType.JOB_TYPE_UNKNOWN:
            new = replace(new, type=JobType.JOB_TYPE_BATCH)
        return new

    def _checked_job(self, new: NewJob) -> NewJob:
        """The job as it will be stored (staged files read); raises if it cannot be created."""
        state_from = ""  # the job whose saved state the new one starts from
        if new.replace_job_id:
            old = self.get_job(new.project_id, new.location, new.replace_job_id)
            check_update(self.store, old, parse_spec(new.spec, new.type), new.type, renames(new))
            state_from = old.id
        if new.created_from_snapshot_id:
            state_from = self.snapshot_to_restore(new.project_id, new.created_from_snapshot_id).source_job_id
        if state_from:
            new = with_state_uids(self.store, new, state_from)
        new = self._with_staged_pipeline(new)
        return self._with_program(new)

    def _with_staged_pipeline(self, new: NewJob) -> NewJob:
        """Read a Beam submission's staged pipeline now (the client overwrites it with the next one)."""
        spec = parse_spec(new.spec, new.type)
        if not spec.pipeline_url or PIPELINE_ARTIFACT in new.artifacts:
            return new
        if spec.streaming and spec.engine == "beam":
            raise InvalidArgument(
                "tidegate cannot run Beam streaming pipelines: no Python local runner can run an unbounded"
                " source or drain. Run streaming jobs on tidegate's Flink engine (a PyFlink program or Flink"
                " SQL script: `tidegate run --engine flink PROGRAM`), or submit this pipeline as a batch job.",
                reason="STREAMING_BEAM_UNSUPPORTED",
            )
        return replace(new, artifacts={**new.artifacts, PIPELINE_ARTIFACT: self.staging.read(spec.pipeline_url)})

    def _with_program(self, new: NewJob) -> NewJob:
        """Read a Flink job's program now and keep it with the job (any worker can then run it)."""
        spec = parse_spec(new.spec, new.type)
        check_tidegate_section(spec)
        if not spec.program or spec.program_artifact in new.artifacts:
            return new
        path = Path(spec.program)
        if path.suffix not in (".py", ".sql"):
            raise InvalidArgument(
                f"tidegate.program must be a PyFlink program (.py) or a Flink SQL script (.sql), not {path.name!r}",
                reason="INVALID_PROGRAM",
            )
        try:
            data = self.staging.read(spec.program)
        except InvalidArgument as error:
            if error.reason != "STAGED_FILE_UNREADABLE":
                raise
            raise InvalidArgument(
                error.message.replace("staged file", "program", 1), reason="INVALID_PROGRAM"
            ) from None
        return replace(new, artifacts={**new.artifacts, spec.program_artifact: data})

    def get_job(self, project_id: str, location: str | None, job_id: str) -> Job:
        """The job, if it lives in this project and location (the default one when None)."""
        check_scope(project_id, location)
        return self._in_location(self.store.get_job(job_id, project_id), location)

    def _in_location(self, job: Job, location: str | None) -> Job:
        """The job, if it lives in ``location`` (the default one when None); ``NotFound`` otherwise."""
        wanted = location or self.default_location
        if job.location != wanted:
            raise NotFound(
                f"No job with id {job.id} in project {job.project_id}, location {wanted}", reason="JOB_NOT_FOUND"
            )
        return job

    def find_job(self, job_id: str) -> Job:
        """The job with this id, in whatever project and location (Beam's Job API names neither)."""
        return self.store.get_job(job_id)

    def active_jobs(self, limit: int = MAX_PAGE_SIZE) -> list[Job]:
        """Jobs not yet in a terminal state, in every project and location, oldest first."""
        return [self.store.get_job(job_id) for job_id in self.store.job_ids_in_states(tuple(ACTIVE_STATES), limit)]

    def artifact(self, project_id: str, location: str | None, job_id: str, name: str) -> bytes | None:
        """A file kept with the job (``pipeline.pb``, a program), or None."""
        job = self.get_job(project_id, location, job_id)
        return self.store.get_artifact(job.id, name)

    def list_jobs(
        self,
        project_id: str,
        location: str | None,
        list_filter: ListFilter = ListFilter.UNKNOWN,
        page_size: int = 0,
        page_token: str = "",
        name: str = "",
        *,
        aggregated: bool = False,
        name_prefix: str = "",
    ) -> Page[Job]:
        """A page of jobs in a location (the default one when None), or in every location.

        ``name``: the jobs of that name (ListJobs's filter); ``name_prefix``: those whose name starts so.
        """
        check_scope(project_id, location)
        size = self._page_size(page_size)
        where = None if aggregated else (location or self.default_location)
        return self.store.list_jobs(project_id, where, list_filter, size, page_token, name, name_prefix)

    def projects(self, limit: int = MAX_PAGE_SIZE) -> list[str]:
        """The projects that have jobs on this server, in name order (at most ``limit``)."""
        return self.store.project_ids(limit)

    @staticmethod
    def _page_size(page_size: int) -> int:
        if page_size < 0:
            raise InvalidArgument(f"pageSize must not be negative, not {page_size}", reason="INVALID_PAGE_SIZE")
        return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)

    def list_messages(
        self,
        project_id: str,
        location: str | None,
        job_id: str,
        minimum_importance: MessageImportance = MessageImportance.JOB_MESSAGE_IMPORTANCE_UNKNOWN,
        start: datetime | None = None,
        end: datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> Page[JobMessage]:
        job = self.get_job(project_id, location, job_id)
        size = self._page_size(page_size)
        return self.store.list_messages(job.id, minimum_importance, start, end, size, page_token)

    def metrics(self, project_id: str, location: str | None, job_id: str) -> tuple[Job, list[MetricValue]]:
        """The job and its metrics (none before it runs, final ones once it has ended)."""
        job = self.get_job(project_id, location, job_id)
        return job, (self.observer.metrics(job) if self.observer else [])

    def stages(self, project_id: str, location: str | None, job_id: str) -> tuple[Job, list[StageDetails]]:
        """The job and its execution details per stage."""
        job = self.get_job(project_id, location, job_id)
        return job, (self.observer.stages(job) if self.observer else [])

    def logs(
        self, project_id: str, location: str | None, job_id: str, offset: str = "", page_size: int = 0
    ) -> tuple[list[LogEntry], str, bool]:
        """A page of what the job's processes printed, after ``offset`` ('' for the start).

        Answers the lines, the offset to ask next, and whether the log is complete: the job
        has ended and its run's last lines have been read, so nothing more will come.
        """
        job = self.get_job(project_id, location, job_id)
        if offset and not offset.isdigit():
            raise InvalidArgument(f"offset must be one a logs page gave, not {offset[:40]!r}", reason="INVALID_OFFSET")
        size = self._page_size(page_size)
        after = int(offset or 0)
        entries = self.store.read_logs(job.id, after, size)
        if entries:
            after = entries[-1].seq
        complete = False
        if len(entries) < size and job.current_state.terminal:
            run = self.store.get_run(job.id)
            complete = run is None or not run.worker
            if complete:  # lines kept between the read and the check of the run
                complete = not self.store.read_logs(job.id, after, 1)
        return entries, str(after) if after else offset, complete

    def history(self, project_id: str, location: str | None, job_id: str) -> list[StateChange]:
        job = self.get_job(project_id, location, job_id)
        return self.store.history(job.id)

    # -- update ----------------------------------------------------------------------

    def update_job(
        self,
        project_id: str,
        location: str | None,
        job_id: str,
        *,
        requested_state: JobState = JobState.JOB_STATE_UNKNOWN,
        labels: Mapping[str, str] | None = None,
        update_mask: Sequence[str] = (),
        caller: str = "",
        named: Mapping[str, str] | None = None,
        runtime_params: Mapping[str, Any] | None = None,
    ) -> Job:
        """UpdateJob: a ``requestedState`` per the lifecycle, new labels under ``updateMask=labels``, or
        new ``runtimeUpdatableParams`` under ``updateMask=runtime_updatable_params.…`` (``runtime_params``:
        the body's, camelCase), which rescale a running streaming job in place.

        ``caller``: who asks (recorded with the state change and in the job's message).
        ``named``: what the body says of the job's id, ``projectId``, ``location`` and
        ``name``; none can be changed, so each must be the job's own (a client may send
        back the job it read). The body's other fields are ignored.
        """
        check_scope(project_id, location)
        mask = {snake(path.strip()) for path in update_mask if path.strip()}
        runtime_mask = sorted(path for path in mask if is_runtime_mask(path))
        unknown = mask - {"labels", "requested_state", *runtime_mask}
        if unknown:
            raise InvalidArgument(
                f"updateMask names fields that cannot be updated: {', '.join(sorted(unknown))}; use labels,"
                " requested_state or runtime_updatable_params.max_num_workers|min_num_workers|worker_utilization_hint",
                reason="INVALID_UPDATE_MASK",
            )
        if runtime_mask:
            if mask != set(runtime_mask):
                raise InvalidArgument(
                    "runtime_updatable_params are updated alone: send labels or a requestedState in another UpdateJob",
                    reason="INVALID_UPDATE_MASK",
                )
            current = _unchanged_by(named, self.get_job(project_id, location, job_id))
            return self.update_runtime_params(current, runtime_mask, runtime_params, caller)
        if "labels" in mask:
            new_labels = dict(labels or {})
            check_labels(new_labels)
        elif mask:
            new_labels = None
        else:
            new_labels = None
            if requested_state is JobState.JOB_STATE_UNKNOWN:
                raise InvalidArgument(
                    "UpdateJob needs a requestedState (or updateMask=labels with new labels)",
                    reason="MISSING_REQUESTED_STATE",
                )
        wants_state = requested_state is not JobState.JOB_STATE_UNKNOWN and (not mask or "requested_state" in mask)

        def decide(job: Job) -> Change | None:  # on the job as last seen, or on its locked row (Store.change_job)
            _unchanged_by(named, self._in_location(job, location))
            change = Change(labels=new_labels)
            if not wants_state:
                return change if new_labels is not None and new_labels != dict(job.labels) else None
            plan = plan_request(job.current_state, job.requested_state, requested_state, job.type)
            if plan.kind is PlanKind.INVALID:
                raise InvalidArgument(plan.reason, reason="INVALID_REQUESTED_STATE")
            # Only a RUNNING job can be updated: one that has never run has no replacement to look for.
            ran = job.current_state not in BEFORE_RUNNING
            replacing = self.store.active_replacement(job.id) if plan.kind is PlanKind.ACCEPT and ran else None
            if replacing:  # its replacement decides: it ends UPDATED, or runs on when the update fails
                raise FailedPrecondition(
                    f"Job {job.id} is being updated: job {replacing} replaces it; cancel job {replacing} to stop"
                    " the update (this job then runs on)",
                    reason="UPDATE_UNDER_WAY",
                    metadata={"currentState": job.current_state.name, "replacedBy": replacing},
                )
            if plan.kind is PlanKind.REJECT:
                reason = "JOB_TERMINAL" if job.current_state.terminal else "REQUEST_NOT_ALLOWED"
                raise FailedPrecondition(
                    f"Job {job.id} is in {job.current_state.name}: {plan.reason}",
                    reason=reason,
                    metadata={
                        "currentState": job.current_state.name,
                        "requestedState": requested_state.name,
                        "carriedRequest": job.requested_state.name,
                    },
                )
            if plan.kind is PlanKind.NOOP:
                return change if new_labels is not None and new_labels != dict(job.labels) else None
            target, actor = plan.step if plan.step else (None, Actor.USER)
            text = f"{plan.requested.name} requested"
            by = f" by {caller}" if caller else ""
            return replace(
                change,
                requested=plan.requested,
                target=target,
                actor=actor,
                reason=text,
                caller=caller,
                message=(
                    MessageImportance.JOB_MESSAGE_BASIC,
                    f"Job {job.id}: {text}{by}" + (f"; now {target.name}" if target else ""),
                ),
            )

        job, changed = self._change(job_id, decide, project_id)
        return self._notify(job) if changed else job

    # -- the service's own edges ---------------------------------------------------------

    def advance(
        self,
        job_id: str,
        target: JobState,
        reason: str = "",
        *,
        message: tuple[MessageImportance, str] | None = None,
        expect: frozenset[JobState] | None = None,
        carrying: JobState | None = None,
        actor: Actor = Actor.SERVICE,
        replaced_by: str | None = None,
    ) -> Job | None:
        """Take an edge for the scheduler or an engine; ``None`` when the job is no longer as the caller saw it.

        ``expect``: the states the caller decided the edge in; ``carrying``: the request the
        job carried then. Both are checked in the edge's own transaction, so an edge decided
        on a job that a request has changed since is never taken (nor attempted).
        """

        def decide(job: Job) -> Change | None:
            if expect is not None and job.current_state not in expect:
                return None
            if carrying is not None and job.requested_state is not carrying:
                return None
            return Change(target=target, actor=actor, reason=reason, message=message, replaced_by_job_id=replaced_by)

        job, changed = self._change(job_id, decide)
        return self._notify(job) if changed else None

    def add_message(self, job_id: str, importance: MessageImportance, text: str) -> None:
        self.store.add_message(job_id, importance, text, self.clock())
