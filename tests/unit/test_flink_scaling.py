"""Dataflow's worker settings mapped onto Flink: parallelism at submit and the checks of a rescale."""

from __future__ import annotations

import pytest

from tidegate.engines.flink_scaling import (
    RuntimeParams,
    check_runtime_params,
    parse_runtime_update,
    resource_requirements,
    submit_parallelism,
    target_workers,
)
from tidegate.errors import InvalidArgument

GCLOUD_MASK = [
    "runtime_updatable_params.min_num_workers",
    "runtime_updatable_params.max_num_workers",
    "runtime_updatable_params.worker_utilization_hint",
]


def test_parse_takes_masked_fields_as_gcloud_sends_them() -> None:
    body = {"minNumWorkers": 2, "maxNumWorkers": 4.0, "workerUtilizationHint": 0.5}
    params = parse_runtime_update(GCLOUD_MASK, body, RuntimeParams())
    assert params == RuntimeParams(max_num_workers=4, min_num_workers=2, worker_utilization_hint=0.5)
    assert params.to_json() == {"maxNumWorkers": 4, "minNumWorkers": 2, "workerUtilizationHint": 0.5}


def test_parse_keeps_unmasked_fields_and_clears_masked_absent_ones() -> None:
    current = RuntimeParams(max_num_workers=4, min_num_workers=1, worker_utilization_hint=0.7)
    params = parse_runtime_update(
        ["runtime_updatable_params.max_num_workers", "runtime_updatable_params.worker_utilization_hint"],
        {"maxNumWorkers": 6},
        current,
    )
    assert params == RuntimeParams(max_num_workers=6, min_num_workers=1, worker_utilization_hint=None)


@pytest.mark.parametrize(
    ("mask", "body"),
    [
        (["runtime_updatable_params.autoscaling_tier"], {"autoscalingTier": "low-latency"}),
        (["runtime_updatable_params.max_num_workers"], {"maxNumWorkers": 2.5}),
        (["runtime_updatable_params.max_num_workers"], {"maxNumWorkers": "3"}),
        (["runtime_updatable_params.max_num_workers"], {"maxNumWorkers": True}),
        (["runtime_updatable_params.worker_utilization_hint"], {"workerUtilizationHint": float("nan")}),
    ],
)
def test_parse_refuses_unknown_paths_and_wrong_types(mask: list[str], body: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        parse_runtime_update(mask, body, RuntimeParams())


@pytest.mark.parametrize(
    "params",
    [
        RuntimeParams(min_num_workers=3, max_num_workers=2),
        RuntimeParams(min_num_workers=-1),
        RuntimeParams(max_num_workers=0),
        RuntimeParams(worker_utilization_hint=0.05),
        RuntimeParams(worker_utilization_hint=0.95),
        RuntimeParams(max_num_workers=9),
    ],
)
def test_check_refuses_out_of_range(params: RuntimeParams) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_runtime_params(params, slots=8)
    assert caught.value.reason == "INVALID_RUNTIME_PARAMS"


@pytest.mark.parametrize(
    "params",
    [
        RuntimeParams(),
        RuntimeParams(min_num_workers=2, max_num_workers=2),
        RuntimeParams(max_num_workers=8, worker_utilization_hint=0.1),
        RuntimeParams(worker_utilization_hint=0.9),
    ],
)
def test_check_accepts_dataflow_values(params: RuntimeParams) -> None:
    check_runtime_params(params, slots=8)


def test_check_without_known_slots_has_no_upper_limit() -> None:
    check_runtime_params(RuntimeParams(max_num_workers=1000))


@pytest.mark.parametrize(
    ("environment", "options", "expected"),
    [
        ({}, {}, None),
        ({"numWorkers": 3}, {"parallelism": 5}, 3),
        ({"numWorkers": 0}, {"numWorkers": 2.0}, 2),
        ({}, {"num_workers": "4"}, 4),
        ({}, {"parallelism": 5}, 5),
        ({"numWorkers": 6, "maxWorkers": 4}, {}, 4),
        ({"maxWorkers": 3}, {}, 3),
        ({}, {"parallelism": 5, "max_num_workers": 2}, 2),
        ({"numWorkers": -2}, {"parallelism": "x"}, None),
    ],
)
def test_submit_parallelism(environment: dict[str, object], options: dict[str, object], expected: int | None) -> None:
    assert submit_parallelism(environment, options) == expected


def test_resource_requirements_bounds_every_vertex() -> None:
    body = resource_requirements(["a", "b"], RuntimeParams(min_num_workers=2, max_num_workers=4), current=1)
    assert body == {
        "a": {"parallelism": {"lowerBound": 2, "upperBound": 4}},
        "b": {"parallelism": {"lowerBound": 2, "upperBound": 4}},
    }
    only_max = resource_requirements(["a"], RuntimeParams(max_num_workers=3), current=2)
    assert only_max == {"a": {"parallelism": {"lowerBound": 1, "upperBound": 3}}}
    only_min = resource_requirements(["a"], RuntimeParams(min_num_workers=3), current=2)
    assert only_min == {"a": {"parallelism": {"lowerBound": 3, "upperBound": 3}}}


@pytest.mark.parametrize(
    ("params", "current", "slots", "expected"),
    [
        (RuntimeParams(max_num_workers=3), 1, None, 3),
        (RuntimeParams(max_num_workers=3), 1, 2, 2),  # as many as the cluster has
        (RuntimeParams(max_num_workers=1, min_num_workers=1), 3, 4, 1),
        (RuntimeParams(min_num_workers=4), 2, None, 4),  # a min above the parallelism raises it
        (RuntimeParams(min_num_workers=1), 2, None, 2),  # within the bounds already: unchanged
        (RuntimeParams(worker_utilization_hint=0.5), 2, None, 2),
    ],
)
def test_target_workers(params: RuntimeParams, current: int, slots: int | None, expected: int) -> None:
    assert target_workers(params, current, slots) == expected
