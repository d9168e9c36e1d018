"""The wire conversions: the fast summary renderer agrees with protobuf's JSON printer."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.cloud import dataflow_v1beta3 as dataflow
from hypothesis import given
from hypothesis import strategies as st

from tidegate.api import wire
from tidegate.errors import InvalidArgument
from tidegate.lifecycle import JobState, JobType
from tidegate.model import Job

times = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))
text = st.text(alphabet="abc-_019", max_size=8)
required = st.text(alphabet="abc-_019", min_size=1, max_size=8)  # ids and names are never empty


def spec_with_metadata() -> bytes:
    pb = wire.JobPb()
    pb.job_metadata.sdk_version.version = "2.77.0"
    pb.job_metadata.sdk_version.sdk_support_status = 1
    pb.environment.temp_storage_prefix = "gs://x"
    return pb.SerializeToString()


jobs = st.builds(
    Job,
    id=required,
    project_id=required,
    location=required,
    name=required,
    type=st.sampled_from(list(JobType)),
    current_state=st.sampled_from(list(JobState)),
    current_state_time=times,
    requested_state=st.sampled_from(list(JobState)),
    create_time=times,
    start_time=times,
    spec=st.sampled_from([b"", spec_with_metadata()]),
    labels=st.dictionaries(text, text, max_size=3),
    client_request_id=text,
    replace_job_id=text,
    replaced_by_job_id=text,
    created_from_snapshot_id=text,
    version=st.integers(1, 10),
)


@given(job=jobs, ints=st.booleans())
def test_summary_renderer_matches_protobuf(job: Job, ints: bool) -> None:
    expected = wire.to_json_dict(wire.job_to_pb(job, wire.JobView.SUMMARY), ints=ints)
    assert wire.summary_dict(job, ints=ints) == expected


@given(when=times)
def test_rfc3339_matches_protobuf(when: datetime) -> None:
    stamp = wire.JobPb()
    stamp.create_time.FromDatetime(when)
    assert wire.rfc3339(when) == stamp.create_time.ToJsonString()


def test_summary_leaves_out_the_spec_but_all_keeps_it() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    job = Job("id", "p", "l", "n", JobType.JOB_TYPE_BATCH, JobState.JOB_STATE_STOPPED, now, JobState.JOB_STATE_RUNNING,
              now, now, spec_with_metadata(), {}, "", "", "", "", 1)  # fmt: skip
    summary = wire.job_to_json_dict(job, wire.JobView.SUMMARY, ints=False)
    full = wire.job_to_json_dict(job, wire.JobView.ALL, ints=False)
    assert "environment" not in summary and summary["jobMetadata"]["sdkVersion"]["version"] == "2.77.0"
    assert full["environment"]["tempStoragePrefix"] == "gs://x"
    parsed = dataflow.Job.from_json(__import__("json").dumps(full))
    assert parsed.current_state == dataflow.JobState.JOB_STATE_STOPPED


def test_options_json_cannot_hold_are_refused() -> None:
    import pytest

    from tidegate.errors import InvalidArgument
    from tidegate.jobspec import parse_spec

    spec = wire.JobPb()
    spec.environment.sdk_pipeline_options.update({"options": {"x": float("nan")}})
    with pytest.raises(InvalidArgument):
        parse_spec(spec.SerializeToString(), JobType.JOB_TYPE_BATCH)


@pytest.mark.parametrize("value", ["5.7", "5.0", "true", "1e0"])
def test_an_enum_is_a_name_or_a_whole_number_never_a_fraction(value: str) -> None:
    """Protobuf's parser would take 5.7 as 5 (JOB_STATE_CANCELLED): a float cancelled a running job."""
    for payload in (f'{{"requestedState": {value}}}', f'{{"environment": {{"flexResourceSchedulingGoal": {value}}}}}'):
        with pytest.raises(InvalidArgument, match="invalid value"):
            wire.parse_json(payload, wire.JobPb(), "google.dataflow.v1beta3.Job")
    assert wire.parse_json('{"requestedState": 5}', wire.JobPb(), "Job").requested_state == 5
    assert wire.parse_json('{"requestedState": "JOB_STATE_DONE"}', wire.JobPb(), "Job").requested_state == 3
