"""Job ids: Dataflow's form, unique, and in the order they were made."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from tidegate.service.jobs import new_job_id

_DATAFLOW_ID = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}_\d{2}_\d{2}-[1-9]\d{18}")


def test_an_id_has_dataflows_form_with_the_creation_time() -> None:
    job_id = new_job_id(datetime(2026, 12, 4, 18, 5, 9, 123456, tzinfo=UTC))
    assert _DATAFLOW_ID.fullmatch(job_id), job_id
    assert job_id.startswith("2026-12-04_18_05_09-1123456")


def test_ids_sort_as_they_were_made_down_to_the_microsecond() -> None:
    start = datetime(2026, 12, 4, 23, 59, 59, 999_990, tzinfo=UTC)
    ids = [new_job_id(start + timedelta(microseconds=n)) for n in range(20)]  # across a second and a day
    assert ids == sorted(ids)


def test_ids_made_in_one_microsecond_still_differ() -> None:
    now = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)
    assert len({new_job_id(now) for _ in range(10_000)}) == 10_000
