"""Admission: capacity, fairness across projects, flexible starts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tidegate.scheduler.admission import Capacity, Waiting, admit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def waiting(*specs: tuple[str, str], flexible: set[str] | None = None) -> list[Waiting]:
    return [
        Waiting(job_id, project, T0 + timedelta(seconds=n), job_id in (flexible or set()))
        for n, (job_id, project) in enumerate(specs)
    ]


def test_first_come_first_served_within_a_project() -> None:
    jobs = waiting(("a1", "a"), ("a2", "a"), ("a3", "a"))
    assert admit(jobs, {}, Capacity(max_jobs=2), T0) == ["a1", "a2"]


def test_round_robin_across_projects() -> None:
    jobs = waiting(("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("c1", "c"), ("b2", "b"))
    assert admit(jobs, {}, Capacity(max_jobs=5), T0) == ["a1", "b1", "c1", "a2", "b2"]


def test_running_jobs_count_against_capacity() -> None:
    jobs = waiting(("a1", "a"), ("b1", "b"))
    assert admit(jobs, {"x": 3}, Capacity(max_jobs=4), T0) == ["a1"]
    assert admit(jobs, {"x": 4}, Capacity(max_jobs=4), T0) == []


def test_per_project_limit_lets_other_projects_through() -> None:
    jobs = waiting(("a1", "a"), ("a2", "a"), ("b1", "b"))
    assert admit(jobs, {"a": 1}, Capacity(max_jobs=10, max_jobs_per_project=2), T0) == ["a1", "b1"]


def test_no_limit() -> None:
    jobs = waiting(*((f"j{n}", "p") for n in range(50)))
    assert len(admit(jobs, {"p": 100}, Capacity(max_jobs=0), T0)) == 50


def test_flexible_job_waits_for_a_quiet_moment() -> None:
    jobs = waiting(("f1", "a"), flexible={"f1"})
    assert admit(jobs, {"b": 1}, Capacity(max_jobs=4), T0) == []
    assert admit(jobs, {}, Capacity(max_jobs=4), T0) == ["f1"]


def test_flexible_job_starts_when_its_window_has_passed() -> None:
    jobs = waiting(("f1", "a"), flexible={"f1"})
    capacity = Capacity(max_jobs=4, flex_window=timedelta(minutes=10))
    assert admit(jobs, {"b": 1}, capacity, T0 + timedelta(minutes=9)) == []
    assert admit(jobs, {"b": 1}, capacity, T0 + timedelta(minutes=11)) == ["f1"]


def test_a_flexible_job_does_not_hold_other_projects_back() -> None:
    jobs = waiting(("f1", "a"), ("b1", "b"), flexible={"f1"})
    assert admit(jobs, {"c": 1}, Capacity(max_jobs=4), T0) == ["b1"]
