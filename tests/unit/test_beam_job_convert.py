"""The Beam Job API's conversions: states, names, options, metrics."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

pytest.importorskip("apache_beam")

from apache_beam.metrics import monitoring_infos
from apache_beam.portability.api import beam_job_api_pb2, beam_runner_api_pb2
from apache_beam.runners.portability import portable_metrics
from google.protobuf import struct_pb2

from tidegate.api.beam_job.convert import (
    beam_state,
    is_streaming,
    job_name,
    labels_option,
    metrics_to_monitoring_infos,
    pipeline_options,
)
from tidegate.lifecycle import JobState
from tidegate.model import MetricValue
from tidegate.service.jobs import _JOB_NAME

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
B = beam_job_api_pb2.JobState


@pytest.mark.parametrize(
    ("state", "beam"),
    [
        (JobState.JOB_STATE_STOPPED, B.STOPPED),
        (JobState.JOB_STATE_QUEUED, B.STARTING),
        (JobState.JOB_STATE_PENDING, B.STARTING),
        (JobState.JOB_STATE_RUNNING, B.RUNNING),
        (JobState.JOB_STATE_RESOURCE_CLEANING_UP, B.RUNNING),
        (JobState.JOB_STATE_DONE, B.DONE),
        (JobState.JOB_STATE_FAILED, B.FAILED),
        (JobState.JOB_STATE_CANCELLING, B.CANCELLING),
        (JobState.JOB_STATE_CANCELLED, B.CANCELLED),
        (JobState.JOB_STATE_DRAINING, B.DRAINING),
        (JobState.JOB_STATE_DRAINED, B.DRAINED),
        (JobState.JOB_STATE_UPDATED, B.UPDATED),
        (JobState.JOB_STATE_UNKNOWN, B.UNSPECIFIED),
    ],
)
def test_every_state_maps_onto_beams(state: JobState, beam: int) -> None:
    assert beam_state(state) == beam


@pytest.mark.parametrize(
    ("prepared", "options", "expected"),
    [
        ("job", {}, "job-1128120000-"),
        ("job", {"job_name": "My_Word.Count"}, "my-word-count"),
        ("job", {"job_name": "2nd run"}, "beamapp-2nd-run"),
        ("", {}, "job-1128120000-"),
    ],
)
def test_job_names_are_dataflow_valid(prepared: str, options: dict[str, str], expected: str) -> None:
    name = job_name(prepared, options, NOW)
    assert _JOB_NAME.fullmatch(name)
    assert name.startswith(expected)
    if not options:  # PortableRunner calls every job 'job': two submissions must not collide
        assert name != job_name(prepared, options, NOW)


def test_labels_come_from_the_labels_option() -> None:
    assert labels_option(["team=data", "tier=gold"]) == {"team": "data", "tier": "gold"}
    assert labels_option(['{"team": "data"}', "flag"]) == {"team": "data", "flag": ""}
    assert labels_option(None) == {}


def test_options_lose_their_urns_and_get_their_types_back() -> None:
    struct = struct_pb2.Struct()
    struct.update(
        {
            "beam:option:num_workers:v1": "3",  # PortableRunner sends integers as strings
            "beam:option:input:v1": "123",  # an unknown option stays as it came
            "beam:option:experiments:v1": ["a", "b"],
            "beam:option:streaming:v1": False,
        }
    )
    options = pipeline_options(struct)
    assert options == {"num_workers": 3, "input": "123", "experiments": ["a", "b"], "streaming": False}


def test_streaming_is_an_option_or_an_unbounded_pcollection() -> None:
    pipeline = beam_runner_api_pb2.Pipeline()
    assert not is_streaming(pipeline, {"streaming": False})
    assert is_streaming(pipeline, {"streaming": True})
    pipeline.components.pcollections["p"].is_bounded = beam_runner_api_pb2.IsBounded.UNBOUNDED
    assert is_streaming(pipeline, {})


def test_metrics_become_monitoring_infos_that_portable_runner_reads() -> None:
    infos = metrics_to_monitoring_infos(
        [
            MetricValue("ElementCount", "Split", 12, origin="dataflow/v1b3", pcollection="Split.None"),
            MetricValue("words", "Split", 12, namespace="wordcount"),
            *(
                MetricValue(f"sizes{suffix}", "Split", value, namespace="wordcount")
                for suffix, value in (("_COUNT", 3), ("_SUM", 12), ("_MIN", 2), ("_MAX", 6))
            ),
        ]
    )
    [count] = [i for i in infos if i.urn == monitoring_infos.ELEMENT_COUNT_URN]
    assert dict(count.labels) == {"PCOLLECTION": "Split.None", "PTRANSFORM": "Split"}
    counters, distributions, *_ = portable_metrics.from_monitoring_infos(infos, user_metrics_only=True)
    assert {(k.step, k.metric.namespace, k.metric.name): v for k, v in counters.items()} == {
        ("Split", "wordcount", "words"): 12
    }
    [(key, distribution)] = distributions.items()
    assert key.metric.name == "sizes"
    assert (distribution.count, distribution.sum, distribution.min, distribution.max) == (3, 12, 2, 6)
