"""``store.seen.SeenJobs``: the newest version of a job wins, and what is kept stays bounded."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from tidegate.lifecycle import JobState, JobType
from tidegate.model import Job
from tidegate.store.seen import SeenJobs

_T = datetime(2026, 1, 1, tzinfo=UTC)
_JOB = Job(
    id="a",
    project_id="p",
    location="l",
    name="n",
    type=JobType.JOB_TYPE_BATCH,
    current_state=JobState.JOB_STATE_STOPPED,
    current_state_time=_T,
    requested_state=JobState.JOB_STATE_RUNNING,
    create_time=_T,
    start_time=_T,
    spec=b"spec",
    labels={},
    client_request_id="",
    replace_job_id="",
    replaced_by_job_id="",
    created_from_snapshot_id="",
    version=1,
)


def job(job_id: str, version: int, spec: bytes = b"spec") -> Job:
    return replace(_JOB, id=job_id, version=version, spec=spec)


def test_a_job_is_kept_and_a_newer_version_replaces_it() -> None:
    seen = SeenJobs()
    assert seen.get("a") is None
    seen.put(job("a", 1))
    seen.put(job("a", 2))
    assert seen.get("a") == job("a", 2)


def test_an_older_version_read_late_does_not_replace_a_newer_one() -> None:
    seen = SeenJobs()
    seen.put(job("a", 3))
    seen.put(job("a", 2))  # a reader's, remembered after a write's
    assert seen.get("a") == job("a", 3)


def test_the_oldest_jobs_go_first_past_the_bound() -> None:
    seen = SeenJobs(max_jobs=2)
    for job_id in "abc":
        seen.put(job(job_id, 1))
    assert seen.get("a") is None
    assert seen.get("b") == job("b", 1) and seen.get("c") == job("c", 1)


def test_a_job_with_a_large_spec_is_not_kept() -> None:
    seen = SeenJobs()
    seen.put(job("a", 1))
    seen.put(job("a", 2, b"x" * (1 << 20)))  # a large pipeline's: the old version goes too
    assert seen.get("a") is None
