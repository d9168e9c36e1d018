"""The job lifecycle: states, edges and what each request does.

This module is pure (no I/O). It is tidegate's reading of Dataflow's ``JobState``
documentation (see ``LIFECYCLE.md``): every other part asks it whether an edge is
legal and what a ``requestedState`` means for a job in a given state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "ACTIVE_STATES",
    "BEFORE_RUNNING",
    "EDGES",
    "END_REQUESTS",
    "REQUESTABLE",
    "TERMINAL_STATES",
    "Actor",
    "JobState",
    "JobType",
    "Plan",
    "PlanKind",
    "is_legal",
    "plan_request",
]


class JobState(enum.IntEnum):
    """``google.dataflow.v1beta3.JobState`` with its wire numbers."""

    JOB_STATE_UNKNOWN = 0
    JOB_STATE_STOPPED = 1
    JOB_STATE_RUNNING = 2
    JOB_STATE_DONE = 3
    JOB_STATE_FAILED = 4
    JOB_STATE_CANCELLED = 5
    JOB_STATE_UPDATED = 6
    JOB_STATE_DRAINING = 7
    JOB_STATE_DRAINED = 8
    JOB_STATE_PENDING = 9
    JOB_STATE_CANCELLING = 10
    JOB_STATE_QUEUED = 11
    JOB_STATE_RESOURCE_CLEANING_UP = 12
    JOB_STATE_PAUSING = 13
    JOB_STATE_PAUSED = 14

    @property
    def short(self) -> str:
        """The name without its prefix, as ``gcloud`` prints it (``Running``)."""
        return self.name.removeprefix("JOB_STATE_").replace("_", " ").title().replace(" ", "_")

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


class JobType(enum.IntEnum):
    """``google.dataflow.v1beta3.JobType``."""

    JOB_TYPE_UNKNOWN = 0
    JOB_TYPE_BATCH = 1
    JOB_TYPE_STREAMING = 2


class Actor(enum.Enum):
    """Who takes an edge: the service itself, or a user through UpdateJob."""

    SERVICE = "service"
    USER = "user"


S = JobState

TERMINAL_STATES: frozenset[JobState] = frozenset(
    {S.JOB_STATE_DONE, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED, S.JOB_STATE_UPDATED, S.JOB_STATE_DRAINED}
)
"""States that never change again."""

ACTIVE_STATES: frozenset[JobState] = frozenset(
    s for s in JobState if s not in TERMINAL_STATES and s is not S.JOB_STATE_UNKNOWN
)
"""States a job can be in while it is not finished (PAUSING/PAUSED included: the API lists them)."""

_SVC = Actor.SERVICE
_USR = Actor.USER

EDGES: frozenset[tuple[JobState, JobState, Actor]] = frozenset(
    {
        (S.JOB_STATE_STOPPED, S.JOB_STATE_QUEUED, _SVC),
        (S.JOB_STATE_STOPPED, S.JOB_STATE_PENDING, _SVC),
        (S.JOB_STATE_STOPPED, S.JOB_STATE_CANCELLED, _USR),
        (S.JOB_STATE_STOPPED, S.JOB_STATE_DONE, _USR),
        (S.JOB_STATE_QUEUED, S.JOB_STATE_PENDING, _SVC),
        (S.JOB_STATE_QUEUED, S.JOB_STATE_CANCELLED, _USR),
        (S.JOB_STATE_PENDING, S.JOB_STATE_RUNNING, _SVC),
        (S.JOB_STATE_PENDING, S.JOB_STATE_FAILED, _SVC),
        (S.JOB_STATE_RUNNING, S.JOB_STATE_DONE, _SVC),
        (S.JOB_STATE_RUNNING, S.JOB_STATE_FAILED, _SVC),
        (S.JOB_STATE_RUNNING, S.JOB_STATE_RESOURCE_CLEANING_UP, _SVC),
        (S.JOB_STATE_RUNNING, S.JOB_STATE_UPDATED, _SVC),
        (S.JOB_STATE_RUNNING, S.JOB_STATE_CANCELLING, _SVC),
        (S.JOB_STATE_RUNNING, S.JOB_STATE_DRAINING, _USR),
        (S.JOB_STATE_RUNNING, S.JOB_STATE_CANCELLED, _USR),
        (S.JOB_STATE_RUNNING, S.JOB_STATE_DONE, _USR),
        (S.JOB_STATE_DRAINING, S.JOB_STATE_DRAINED, _SVC),
        (S.JOB_STATE_DRAINING, S.JOB_STATE_FAILED, _SVC),
        (S.JOB_STATE_DRAINING, S.JOB_STATE_CANCELLED, _USR),
        (S.JOB_STATE_CANCELLING, S.JOB_STATE_CANCELLED, _SVC),
        (S.JOB_STATE_CANCELLING, S.JOB_STATE_FAILED, _SVC),
        (S.JOB_STATE_RESOURCE_CLEANING_UP, S.JOB_STATE_DONE, _SVC),
    }
)
"""Every legal edge ``(from, to, who)``. No other edge exists."""


def _reachable(start: JobState) -> frozenset[JobState]:
    """Every state a job in ``start`` can come to along the edges."""
    seen: set[JobState] = set()
    frontier = [start]
    while frontier:
        state = frontier.pop()
        for source, target, _ in EDGES:
            if source is state and target not in seen:
                seen.add(target)
                frontier.append(target)
    return frozenset(seen)


_AFTER_RUNNING = _reachable(S.JOB_STATE_RUNNING)
BEFORE_RUNNING: frozenset[JobState] = frozenset(
    s for s in S if S.JOB_STATE_RUNNING in _reachable(s) and s not in _AFTER_RUNNING
)
"""The states a job is in only before it has ever run (no edge leads back to them): STOPPED, QUEUED,
PENDING. Nothing can have been done to such a job that needs a running one, such as an update."""


def is_legal(source: JobState, target: JobState, actor: Actor) -> bool:
    """Whether ``actor`` may move a job from ``source`` to ``target``."""
    return (source, target, actor) in EDGES


REQUESTABLE: frozenset[JobState] = frozenset(
    {
        S.JOB_STATE_CANCELLED,
        S.JOB_STATE_DRAINED,
        S.JOB_STATE_DRAINING,
        S.JOB_STATE_DONE,
        S.JOB_STATE_RUNNING,
        S.JOB_STATE_STOPPED,
    }
)
"""States an UpdateJob may name in ``requestedState`` (STOPPED only as the one a held job carries)."""


END_REQUESTS: frozenset[JobState] = frozenset({S.JOB_STATE_CANCELLED, S.JOB_STATE_DONE, S.JOB_STATE_DRAINED})
"""Requests toward an end. Once a job carries one, it is honoured: a different request is refused, except a
cancel of a draining job (the escalation Dataflow allows)."""


class PlanKind(enum.Enum):
    """The outcome of a request."""

    ACCEPT = "accept"  # record the request, take ``step`` now if there is one
    NOOP = "noop"  # the job already carries this request: answer the job unchanged
    INVALID = "invalid"  # INVALID_ARGUMENT: the state belongs to the service
    REJECT = "reject"  # FAILED_PRECONDITION: not allowed in the job's state


@dataclass(frozen=True)
class Plan:
    """What a ``requestedState`` does to a job in its current state.

    ``requested`` is the request as it is recorded on the job (DRAINING is recorded as
    DRAINED). ``step`` is the edge the service takes at once, in the same transaction
    that records the request; the rest of the way (stopping workers) is the
    scheduler's, which walks legal edges toward ``requested``.
    """

    kind: PlanKind
    requested: JobState
    step: tuple[JobState, Actor] | None = None
    reason: str = ""


def plan_request(
    current: JobState,
    carried: JobState,
    requested: JobState,
    job_type: JobType,
) -> Plan:
    """Decide what ``requested`` does to a job in ``current`` that carries ``carried``."""
    if requested is S.JOB_STATE_DRAINING:
        requested = S.JOB_STATE_DRAINED
    if requested not in REQUESTABLE:
        return Plan(
            PlanKind.INVALID,
            requested,
            reason=f"{requested.name} cannot be requested: that state is set only by the service",
        )
    if requested is carried:
        return Plan(PlanKind.NOOP, requested)
    if current.terminal:
        return Plan(
            PlanKind.REJECT,
            requested,
            reason=f"the job is in the terminal state {current.name}; it cannot be moved to {requested.name}",
        )
    here = f"a job in {current.name}"
    if requested is S.JOB_STATE_STOPPED:
        return Plan(
            PlanKind.INVALID,
            requested,
            reason="JOB_STATE_STOPPED can be requested only when a job is created (to hold it)",
        )
    if carried in END_REQUESTS and not (
        carried is S.JOB_STATE_DRAINED and requested is S.JOB_STATE_CANCELLED and current is S.JOB_STATE_DRAINING
    ):
        return Plan(
            PlanKind.REJECT,
            requested,
            reason=f"the job already carries the request {carried.name}, which is being honoured;"
            f" it cannot be changed to {requested.name}",
        )
    if requested is S.JOB_STATE_CANCELLED:
        if current in (S.JOB_STATE_STOPPED, S.JOB_STATE_QUEUED):
            return Plan(PlanKind.ACCEPT, requested, (S.JOB_STATE_CANCELLED, _USR))
        if current is S.JOB_STATE_RUNNING:
            return Plan(PlanKind.ACCEPT, requested, (S.JOB_STATE_CANCELLING, _SVC))
        if current in (S.JOB_STATE_DRAINING, S.JOB_STATE_PENDING, S.JOB_STATE_CANCELLING):
            return Plan(PlanKind.ACCEPT, requested)
        return Plan(
            PlanKind.REJECT,
            requested,
            reason=f"{here} cannot be cancelled"
            + (": it has already succeeded and is cleaning up" if current is S.JOB_STATE_RESOURCE_CLEANING_UP else ""),
        )
    if requested is S.JOB_STATE_DRAINED:
        if job_type is not S_STREAMING:
            return Plan(PlanKind.REJECT, requested, reason="only streaming jobs can be drained; this is a batch job")
        if current is S.JOB_STATE_RUNNING:
            return Plan(PlanKind.ACCEPT, requested, (S.JOB_STATE_DRAINING, _USR))
        if current is S.JOB_STATE_DRAINING:
            return Plan(PlanKind.ACCEPT, requested)
        return Plan(PlanKind.REJECT, requested, reason=f"{here} cannot be drained; only a RUNNING job can")
    if requested is S.JOB_STATE_DONE:
        if current is S.JOB_STATE_STOPPED:
            return Plan(PlanKind.ACCEPT, requested, (S.JOB_STATE_DONE, _USR))
        if current is S.JOB_STATE_RUNNING:
            return Plan(PlanKind.ACCEPT, requested)
        return Plan(PlanKind.REJECT, requested, reason=f"{here} cannot be set to JOB_STATE_DONE")
    # requested is RUNNING
    if current is S.JOB_STATE_STOPPED:
        return Plan(PlanKind.ACCEPT, requested)
    return Plan(PlanKind.REJECT, requested, reason=f"{here} carries the request {carried.name}; it cannot be started")


S_STREAMING = JobType.JOB_TYPE_STREAMING
