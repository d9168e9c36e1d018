"""Dataflow's worker settings on Flink: parallelism at submit, and the checks of an in-place rescale.

Pure functions, no I/O. A Dataflow "worker" is one Flink parallel slot here:

- at submit, ``environment.numWorkers`` (or, without it, the ``numWorkers`` pipeline
  option, then Flink's own ``parallelism`` option) is the job's parallelism, capped by
  ``maxWorkers`` (``maxNumWorkers``) when that is set;
- an UpdateJob under ``updateMask=runtime_updatable_params.…`` (what
  ``gcloud dataflow jobs update-options`` sends) carries ``runtimeUpdatableParams``;
  :func:`parse_runtime_update` reads it and :func:`check_runtime_params` refuses what
  Dataflow refuses (negatives, min above max, a utilization hint outside [0.1, 0.9])
  and what the cluster cannot give (more workers than it has slots);
- :func:`resource_requirements` is the body of Flink's adaptive scheduler's
  ``PUT /jobs/:id/resource-requirements`` for those bounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from tidegate.errors import InvalidArgument
from tidegate.model import RuntimeParams

__all__ = [
    "MASK_FIELDS",
    "MASK_PREFIX",
    "RuntimeParams",
    "check_runtime_params",
    "is_runtime_mask",
    "parse_runtime_update",
    "resource_requirements",
    "submit_parallelism",
    "target_workers",
]

MASK_PREFIX = "runtime_updatable_params."
MASK_FIELDS = {
    "max_num_workers": "maxNumWorkers",
    "min_num_workers": "minNumWorkers",
    "worker_utilization_hint": "workerUtilizationHint",
}
HINT_RANGE = (0.1, 0.9)  # Dataflow's documented range of workerUtilizationHint


def is_runtime_mask(path: str) -> bool:
    return path.strip().startswith(MASK_PREFIX)


def _whole(value: Any, field: str) -> int:
    # A protobuf Struct or JSON may carry 3.0 for 3; anything else is refused.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(
            f"runtimeUpdatableParams.{field} must be a whole number, not {value!r:.40}", reason="INVALID_RUNTIME_PARAMS"
        )
    if isinstance(value, float) and not value.is_integer():
        raise InvalidArgument(
            f"runtimeUpdatableParams.{field} must be a whole number, not {value!r}", reason="INVALID_RUNTIME_PARAMS"
        )
    return int(value)


def parse_runtime_update(mask: Sequence[str], body: Mapping[str, Any] | None, current: RuntimeParams) -> RuntimeParams:
    """The job's parameters after an update: each masked field takes the body's value.

    A masked field that the body leaves out is cleared (``--unset-worker-utilization-hint``);
    a field not masked keeps its value. An unknown ``runtime_updatable_params.…`` path is
    INVALID_ARGUMENT.
    """
    body = body or {}
    fields: dict[str, int | float | None] = {
        "max_num_workers": current.max_num_workers,
        "min_num_workers": current.min_num_workers,
        "worker_utilization_hint": current.worker_utilization_hint,
    }
    for path in mask:
        path = path.strip()
        if not is_runtime_mask(path):
            continue
        field = path[len(MASK_PREFIX) :]
        json_name = MASK_FIELDS.get(field)
        if json_name is None:
            raise InvalidArgument(
                f"updateMask names {path!r}; runtime_updatable_params has {', '.join(sorted(MASK_FIELDS))}",
                reason="INVALID_UPDATE_MASK",
            )
        value = body.get(json_name, body.get(field))
        if value is None:
            fields[field] = None
        elif field == "worker_utilization_hint":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidArgument(
                    f"runtimeUpdatableParams.{json_name} must be a number, not {value!r:.40}",
                    reason="INVALID_RUNTIME_PARAMS",
                )
            fields[field] = float(value)
        else:
            fields[field] = _whole(value, json_name)
    high, low, hint = fields["max_num_workers"], fields["min_num_workers"], fields["worker_utilization_hint"]
    return RuntimeParams(
        max_num_workers=None if high is None else int(high),
        min_num_workers=None if low is None else int(low),
        worker_utilization_hint=hint,
    )


def check_runtime_params(params: RuntimeParams, slots: int | None = None) -> None:
    """INVALID_ARGUMENT unless the parameters are ones Dataflow (and the cluster) accept.

    ``slots``: the cluster's task slots, when known; more workers than that cannot run.
    """
    low, high = params.min_num_workers, params.max_num_workers
    for name, value in (("minNumWorkers", low), ("maxNumWorkers", high)):
        if value is not None and value < 1:
            raise InvalidArgument(
                f"runtimeUpdatableParams.{name} must be at least 1, not {value}", reason="INVALID_RUNTIME_PARAMS"
            )
    if low is not None and high is not None and low > high:
        raise InvalidArgument(
            f"runtimeUpdatableParams.minNumWorkers ({low}) is above maxNumWorkers ({high})",
            reason="INVALID_RUNTIME_PARAMS",
        )
    if slots is not None:
        for name, value in (("minNumWorkers", low), ("maxNumWorkers", high)):
            if value is not None and value > slots:
                raise InvalidArgument(
                    f"runtimeUpdatableParams.{name} ({value}) is above the Flink cluster's {slots} task slots",
                    reason="INVALID_RUNTIME_PARAMS",
                )
    hint = params.worker_utilization_hint
    if hint is not None and not HINT_RANGE[0] <= hint <= HINT_RANGE[1]:
        raise InvalidArgument(
            f"runtimeUpdatableParams.workerUtilizationHint must be within [{HINT_RANGE[0]}, {HINT_RANGE[1]}],"
            f" not {hint}",
            reason="INVALID_RUNTIME_PARAMS",
        )


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number) or not number.is_integer() or number < 1:
        return None
    return int(number)


def submit_parallelism(environment: Mapping[str, Any], options: Mapping[str, Any]) -> int | None:
    """The Flink parallelism a job's worker settings ask for; ``None`` for the cluster's default.

    ``environment.numWorkers`` first, then the ``numWorkers``/``num_workers`` pipeline
    option, then Flink's ``parallelism``; capped by ``environment.maxWorkers`` or the
    ``maxNumWorkers``/``max_num_workers`` option. Values that are not positive whole
    numbers are ignored, as Dataflow ignores a zero ``numWorkers``.
    """
    wanted = None
    for value in (
        environment.get("numWorkers"),
        options.get("numWorkers"),
        options.get("num_workers"),
        options.get("parallelism"),
    ):
        wanted = _positive_int(value)
        if wanted is not None:
            break
    cap = None
    for value in (environment.get("maxWorkers"), options.get("maxNumWorkers"), options.get("max_num_workers")):
        cap = _positive_int(value)
        if cap is not None:
            break
    if wanted is None:
        return cap
    return min(wanted, cap) if cap is not None else wanted


def resource_requirements(vertex_ids: Sequence[str], params: RuntimeParams, current: int) -> dict[str, Any]:
    """The body of ``PUT /jobs/:id/resource-requirements``: every vertex within the new bounds.

    ``current``: the parallelism the job runs at now, used for a bound that is not set
    (a new max below it lowers the job to max; a new min above it raises it to min).
    """
    lower = params.min_num_workers if params.min_num_workers is not None else 1
    upper = params.max_num_workers if params.max_num_workers is not None else max(current, lower, 1)
    lower = min(lower, upper)
    return {vertex: {"parallelism": {"lowerBound": lower, "upperBound": upper}} for vertex in vertex_ids}


def target_workers(params: RuntimeParams, current: int, slots: int | None = None) -> int:
    """The parallelism a job runs at once the adaptive scheduler has taken ``resource_requirements``'s bounds.

    It runs at the upper bound when the cluster has the slots (``slots``: the job's own and the
    free ones), else at as many as it has, never below one.
    """
    bounds = resource_requirements(["-"], params, current)["-"]["parallelism"]
    upper = int(bounds["upperBound"])
    return max(1, min(upper, slots) if slots is not None else upper)
