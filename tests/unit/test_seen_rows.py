"""``store.seen.SeenRows``: the newest version of a job's row wins, and what is kept stays bounded."""

from __future__ import annotations

from tidegate.store.seen import SeenRows


def row(job_id: str, version: int, spec: bytes = b"spec") -> tuple[object, ...]:
    return (job_id, spec, version)


def rows(max_rows: int = 8) -> SeenRows:
    return SeenRows(version_at=2, spec_at=1, max_rows=max_rows)


def test_a_row_is_kept_and_a_newer_version_replaces_it() -> None:
    seen = rows()
    assert seen.get("a") is None
    seen.put(row("a", 1))
    seen.put(row("a", 2))
    assert seen.get("a") == row("a", 2)


def test_an_older_version_read_late_does_not_replace_a_newer_one() -> None:
    seen = rows()
    seen.put(row("a", 3))
    seen.put(row("a", 2))  # a reader's row, remembered after a write's
    assert seen.get("a") == row("a", 3)


def test_the_oldest_rows_go_first_past_the_bound() -> None:
    seen = rows(max_rows=2)
    for job_id in "abc":
        seen.put(row(job_id, 1))
    assert seen.get("a") is None
    assert seen.get("b") == row("b", 1) and seen.get("c") == row("c", 1)


def test_a_row_with_a_large_spec_is_not_kept() -> None:
    seen = rows()
    seen.put(row("a", 1))
    seen.put(row("a", 2, b"x" * (1 << 20)))  # a large pipeline's: the old version goes too
    assert seen.get("a") is None
