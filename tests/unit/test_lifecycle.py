"""The lifecycle core against LIFECYCLE.md, over every combination."""

from __future__ import annotations

import itertools

import pytest

from tidegate.lifecycle import (
    BEFORE_RUNNING,
    EDGES,
    END_REQUESTS,
    REQUESTABLE,
    TERMINAL_STATES,
    Actor,
    JobState,
    JobType,
    PlanKind,
    is_legal,
    plan_request,
)

S = JobState
SVC, USR = Actor.SERVICE, Actor.USER
BATCH, STREAMING = JobType.JOB_TYPE_BATCH, JobType.JOB_TYPE_STREAMING

# LIFECYCLE.md's edge table, written out again by hand: the test must not read the code's table.
EXPECTED_EDGES = {
    ("STOPPED", "QUEUED", SVC),
    ("STOPPED", "PENDING", SVC),
    ("STOPPED", "CANCELLED", USR),
    ("STOPPED", "DONE", USR),
    ("QUEUED", "PENDING", SVC),
    ("QUEUED", "CANCELLED", USR),
    ("PENDING", "RUNNING", SVC),
    ("PENDING", "FAILED", SVC),
    ("RUNNING", "DONE", SVC),
    ("RUNNING", "FAILED", SVC),
    ("RUNNING", "RESOURCE_CLEANING_UP", SVC),
    ("RUNNING", "UPDATED", SVC),
    ("RUNNING", "CANCELLING", SVC),
    ("RUNNING", "DRAINING", USR),
    ("RUNNING", "CANCELLED", USR),
    ("RUNNING", "DONE", USR),
    ("DRAINING", "DRAINED", SVC),
    ("DRAINING", "FAILED", SVC),
    ("DRAINING", "CANCELLED", USR),
    ("CANCELLING", "CANCELLED", SVC),
    ("CANCELLING", "FAILED", SVC),
    ("RESOURCE_CLEANING_UP", "DONE", SVC),
}


def state(short: str) -> JobState:
    return JobState[f"JOB_STATE_{short}"]


def test_wire_numbers_match_the_api() -> None:
    expected = {
        "UNKNOWN": 0, "STOPPED": 1, "RUNNING": 2, "DONE": 3, "FAILED": 4, "CANCELLED": 5, "UPDATED": 6,
        "DRAINING": 7, "DRAINED": 8, "PENDING": 9, "CANCELLING": 10, "QUEUED": 11,
        "RESOURCE_CLEANING_UP": 12, "PAUSING": 13, "PAUSED": 14,
    }  # fmt: skip
    assert {s.name.removeprefix("JOB_STATE_"): int(s) for s in JobState} == expected


def test_wire_numbers_match_the_official_client() -> None:
    from google.cloud import dataflow_v1beta3 as dataflow

    assert {s.name: int(s) for s in JobState} == {s.name: int(s) for s in dataflow.JobState}


def test_terminal_states() -> None:
    assert {s.name for s in TERMINAL_STATES} == {
        f"JOB_STATE_{n}" for n in ("DONE", "FAILED", "CANCELLED", "UPDATED", "DRAINED")
    }


@pytest.mark.parametrize(("source", "target", "actor"), list(itertools.product(JobState, JobState, Actor)))
def test_every_edge_and_actor(source: JobState, target: JobState, actor: Actor) -> None:
    expected = (source.name.removeprefix("JOB_STATE_"), target.name.removeprefix("JOB_STATE_"), actor) in EXPECTED_EDGES
    assert is_legal(source, target, actor) is expected


def test_terminal_states_have_no_way_out() -> None:
    assert not [edge for edge in EDGES if edge[0] in TERMINAL_STATES]


def test_edge_table_size() -> None:
    assert len(EDGES) == len(EXPECTED_EDGES)


# What each request does, per LIFECYCLE.md's request table: (current, requested, type) -> (kind, immediate step).
ACCEPTED = {
    ("STOPPED", "CANCELLED"): ("CANCELLED", USR),
    ("QUEUED", "CANCELLED"): ("CANCELLED", USR),
    ("RUNNING", "CANCELLED"): ("CANCELLING", SVC),
    ("DRAINING", "CANCELLED"): None,
    ("PENDING", "CANCELLED"): None,
    ("STOPPED", "DONE"): ("DONE", USR),
    ("RUNNING", "DONE"): None,
    ("STOPPED", "RUNNING"): None,
}
SERVICE_ONLY = [
    "FAILED",
    "UPDATED",
    "PENDING",
    "QUEUED",
    "CANCELLING",
    "RESOURCE_CLEANING_UP",
    "UNKNOWN",
    "PAUSING",
    "PAUSED",
]


@pytest.mark.parametrize("current", list(JobState))
@pytest.mark.parametrize("requested", list(JobState))
@pytest.mark.parametrize("job_type", [BATCH, STREAMING])
def test_every_request_in_every_state(current: JobState, requested: JobState, job_type: JobType) -> None:
    carried = S.JOB_STATE_RUNNING
    plan = plan_request(current, carried, requested, job_type)
    cur = current.name.removeprefix("JOB_STATE_")
    req = requested.name.removeprefix("JOB_STATE_")
    if req in SERVICE_ONLY:
        assert plan.kind is PlanKind.INVALID
    elif req == "RUNNING":  # the request the job carries: a no-op in any state
        assert plan.kind is PlanKind.NOOP
    elif req == "STOPPED":
        expected = PlanKind.REJECT if current.terminal else PlanKind.INVALID
        assert plan.kind is expected
    elif current.terminal:
        assert plan.kind is PlanKind.REJECT
        assert current.name in plan.reason
    elif req in ("DRAINED", "DRAINING"):
        if job_type is BATCH:
            assert plan.kind is PlanKind.REJECT
            assert "batch" in plan.reason
        elif cur == "RUNNING":
            assert (plan.kind, plan.step, plan.requested) == (
                PlanKind.ACCEPT,
                (S.JOB_STATE_DRAINING, USR),
                S.JOB_STATE_DRAINED,
            )
        elif cur == "DRAINING":
            assert (plan.kind, plan.step) == (PlanKind.ACCEPT, None)
        else:
            assert plan.kind is PlanKind.REJECT
    elif (cur, req) in ACCEPTED:
        step = ACCEPTED[(cur, req)]
        assert plan.kind is PlanKind.ACCEPT
        assert plan.step == (None if step is None else (state(step[0]), step[1]))
        if plan.step:
            assert is_legal(current, *plan.step)
    elif (cur, req) == ("CANCELLING", "CANCELLED"):
        assert plan.kind is PlanKind.ACCEPT and plan.step is None
    else:
        assert plan.kind is PlanKind.REJECT, (cur, req)


def test_cancel_while_cleaning_up_says_the_job_succeeded() -> None:
    plan = plan_request(S.JOB_STATE_RESOURCE_CLEANING_UP, S.JOB_STATE_RUNNING, S.JOB_STATE_CANCELLED, BATCH)
    assert plan.kind is PlanKind.REJECT
    assert "succeeded" in plan.reason


@pytest.mark.parametrize("current", list(JobState))
@pytest.mark.parametrize("carried", [S.JOB_STATE_CANCELLED, S.JOB_STATE_DRAINED, S.JOB_STATE_DONE, S.JOB_STATE_STOPPED])
def test_repeating_the_carried_request_is_a_noop_in_any_state(current: JobState, carried: JobState) -> None:
    assert plan_request(current, carried, carried, STREAMING).kind is PlanKind.NOOP


def test_draining_is_recorded_as_drained_and_repeats_as_a_noop() -> None:
    first = plan_request(S.JOB_STATE_RUNNING, S.JOB_STATE_RUNNING, S.JOB_STATE_DRAINING, STREAMING)
    assert first.requested is S.JOB_STATE_DRAINED
    again = plan_request(S.JOB_STATE_DRAINING, S.JOB_STATE_DRAINED, S.JOB_STATE_DRAINING, STREAMING)
    assert again.kind is PlanKind.NOOP


def test_every_immediate_step_is_a_legal_edge() -> None:
    for current, carried, requested, job_type in itertools.product(JobState, JobState, JobState, JobType):
        plan = plan_request(current, carried, requested, job_type)
        if plan.step is not None:
            assert is_legal(current, *plan.step), (current, requested, plan)


@pytest.mark.parametrize("current", [s for s in JobState if not s.terminal and s is not S.JOB_STATE_UNKNOWN])
@pytest.mark.parametrize("carried", sorted(END_REQUESTS))
@pytest.mark.parametrize("requested", sorted(REQUESTABLE - {S.JOB_STATE_STOPPED}))
def test_a_request_toward_an_end_is_never_replaced_but_a_draining_job_may_be_cancelled(
    current: JobState, carried: JobState, requested: JobState
) -> None:
    plan = plan_request(current, carried, requested, STREAMING)
    recorded = S.JOB_STATE_DRAINED if requested is S.JOB_STATE_DRAINING else requested
    if recorded is carried:
        assert plan.kind is PlanKind.NOOP
    elif (carried, recorded, current) == (S.JOB_STATE_DRAINED, S.JOB_STATE_CANCELLED, S.JOB_STATE_DRAINING):
        assert (plan.kind, plan.step) == (PlanKind.ACCEPT, None)
    else:
        assert plan.kind is PlanKind.REJECT
        assert carried.name in plan.reason


def test_the_states_before_running_are_the_ones_no_edge_returns_to() -> None:
    assert {S.JOB_STATE_STOPPED, S.JOB_STATE_QUEUED, S.JOB_STATE_PENDING} == BEFORE_RUNNING
    # No job that has run (RUNNING or anything after it) can come back to one of them.
    after_running = {S.JOB_STATE_RUNNING}
    while True:
        grown = after_running | {target for source, target, _ in EDGES if source in after_running}
        if grown == after_running:
            break
        after_running = grown
    assert not BEFORE_RUNNING & after_running
    assert all(source in BEFORE_RUNNING for source, target, _ in EDGES if target in BEFORE_RUNNING)
